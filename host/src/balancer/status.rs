//! Member status flags that an administrator sets: Apache's `status=` member parameter (and, later,
//! the balancer-manager's switches). Error state is not one of them: it is timed, see `Balancer`.

use std::fmt;

/// A set of Apache member status flags.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MemberStatus(u8);

impl MemberStatus {
    /// `D`: never chosen, sticky routes to it are re-balanced.
    pub const DISABLED: MemberStatus = MemberStatus(1);
    /// `S`: administratively stopped; like disabled.
    pub const STOPPED: MemberStatus = MemberStatus(2);
    /// `I`: errors never put the member in error state.
    pub const IGNORE_ERRORS: MemberStatus = MemberStatus(4);
    /// `H`: hot standby, chosen only when no other member of its lbset is usable.
    pub const HOT_STANDBY: MemberStatus = MemberStatus(8);
    /// `N`: draining, takes only requests whose sticky route names it.
    pub const DRAINING: MemberStatus = MemberStatus(16);
    /// `R`: hot spare (treated like a hot standby, see the README).
    pub const SPARE: MemberStatus = MemberStatus(32);
    /// `C`: taken out by its health checks (mod_proxy_hcheck); back after `hcpasses` passes.
    pub const HC_FAILED: MemberStatus = MemberStatus(64);

    const LETTERS: [(char, MemberStatus); 7] = [
        ('D', Self::DISABLED),
        ('S', Self::STOPPED),
        ('I', Self::IGNORE_ERRORS),
        ('H', Self::HOT_STANDBY),
        ('N', Self::DRAINING),
        ('R', Self::SPARE),
        ('C', Self::HC_FAILED),
    ];

    pub fn bits(self) -> u8 {
        self.0
    }

    pub fn from_bits(bits: u8) -> MemberStatus {
        MemberStatus(bits & 127)
    }

    pub fn contains(self, other: MemberStatus) -> bool {
        self.0 & other.0 == other.0
    }

    pub fn with(self, other: MemberStatus, on: bool) -> MemberStatus {
        if on { MemberStatus(self.0 | other.0) } else { MemberStatus(self.0 & !other.0) }
    }

    /// Apache's syntax: `+H`, `D`, `+D-I`, `-S` (a letter without sign means `+`).
    pub fn parse(spec: &str) -> Result<MemberStatus, String> {
        let mut status = MemberStatus::default();
        let mut on = true;
        for c in spec.chars() {
            match c {
                '+' => on = true,
                '-' => on = false,
                ' ' => {}
                c => {
                    let Some((_, flag)) = Self::LETTERS.iter().find(|(l, _)| *l == c.to_ascii_uppercase()) else {
                        return Err(format!("unknown status flag `{c}` (known: D S I H N R C, each with + or -)"));
                    };
                    status = status.with(*flag, on);
                    on = true;
                }
            }
        }
        Ok(status)
    }
}

impl fmt::Display for MemberStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (letter, flag) in Self::LETTERS {
            if self.contains(flag) {
                write!(f, "{letter}")?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn apache_status_syntax() {
        let cases = [("+H", "H"), ("D", "D"), ("+D-D", ""), ("+D +I", "DI"), ("h", "H"), ("+N+R", "NR"), ("+C", "C")];
        for (spec, shown) in cases {
            assert_eq!(MemberStatus::parse(spec).unwrap().to_string(), shown, "{spec}");
        }
        assert!(MemberStatus::parse("+X").unwrap_err().contains("unknown status flag `X`"));
    }
}
