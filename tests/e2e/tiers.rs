//! Member states and tiers that the Apache comparison cannot reach (its recordings have two plain
//! members): lbset, hot standby, draining, disabled, redirect, maxattempts. Table-driven: members
//! as configured (and which are dead), client requests (with or without a cookie), who answers.

use crate::support::*;

struct Case {
    name: &'static str,
    web1: &'static str,
    web2: &'static str,
    balancer: &'static str,
    web1_dead: bool,
    /// Cookie per request (None: no cookie), and the expected answer ("503" for Fulcrum's own).
    requests: &'static [(Option<&'static str>, &'static str)],
}

const STICKY: &str = "stickysession = \"BALANCEID\"";
const WEB1: Option<&str> = Some("BALANCEID=x.web1");

const CASES: &[Case] = &[
    Case {
        name: "a higher lbset is used only when the lower one is down (alive)",
        web1: "lbset = 0",
        web2: "lbset = 1",
        balancer: "",
        web1_dead: false,
        requests: &[(None, "web1"), (None, "web1"), (None, "web1")],
    },
    Case {
        name: "a higher lbset is used only when the lower one is down (dead)",
        web1: "lbset = 0",
        web2: "lbset = 1",
        balancer: "",
        web1_dead: true,
        requests: &[(None, "web2"), (None, "web2")],
    },
    Case {
        name: "a hot standby waits while another member is usable",
        web1: "",
        web2: "status = \"+H\"",
        balancer: "",
        web1_dead: false,
        requests: &[(None, "web1"), (None, "web1"), (None, "web1")],
    },
    Case {
        name: "a hot standby takes over when the others are down",
        web1: "",
        web2: "status = \"+H\"",
        balancer: "",
        web1_dead: true,
        requests: &[(None, "web2"), (None, "web2")],
    },
    Case {
        name: "a draining member keeps its sticky sessions only",
        web1: "status = \"+N\"",
        web2: "",
        balancer: STICKY,
        web1_dead: false,
        requests: &[(None, "web2"), (WEB1, "web1"), (None, "web2"), (WEB1, "web1")],
    },
    Case {
        name: "a disabled member gets nothing, its sessions are re-balanced",
        web1: "status = \"+D\"",
        web2: "",
        balancer: STICKY,
        web1_dead: false,
        requests: &[(None, "web2"), (WEB1, "web2"), (None, "web2")],
    },
    Case {
        name: "redirect sends a disabled member's sessions to the named route",
        web1: "status = \"+D\"\nredirect = \"web2\"",
        web2: "",
        balancer: STICKY,
        web1_dead: false,
        requests: &[(WEB1, "web2"), (WEB1, "web2")],
    },
    Case {
        name: "maxattempts = 0: no failover, the member is marked in error",
        web1: "",
        web2: "",
        balancer: "maxattempts = 0",
        web1_dead: true,
        requests: &[(None, "503"), (None, "web2"), (None, "web2")],
    },
    Case {
        name: "ignore-errors: a refusing member is never put in error state",
        web1: "status = \"+I\"",
        web2: "",
        balancer: "",
        web1_dead: true,
        // Each request tries web1 first (it stays in rotation), fails over to web2.
        requests: &[(None, "web2"), (None, "web2"), (None, "web2")],
    },
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn member_states_and_tiers() {
    for case in CASES {
        let (web1, web2) = two_backends().await;
        let web1_url = web1.url();
        if case.web1_dead {
            drop(web1);
        }
        let config = members_config(
            &[
                (&web1_url, &format!("route = \"web1\"\n{}", case.web1)),
                (&web2.url(), &format!("route = \"web2\"\n{}", case.web2)),
            ],
            case.balancer,
        );
        let fulcrum = Fulcrum::start(&config);
        let client = client();
        for (i, (cookie, expected)) in case.requests.iter().enumerate() {
            let headers: Vec<(&str, &str)> = cookie.iter().map(|c| ("cookie", *c)).collect();
            let answer = get(&client, &fulcrum.url("/"), &headers).await;
            let got = if answer.served_by().is_empty() {
                answer.status.as_str().to_string()
            } else {
                answer.served_by().to_string()
            };
            assert_eq!(got, *expected, "{}: request {i} (cookie {cookie:?})", case.name);
        }
    }
}
