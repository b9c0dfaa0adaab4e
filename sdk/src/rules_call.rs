//! The `fulcrum:plugin` rules calls (0.2.0 and later) without slots: names declared once in
//! [`Needs`], values read by name from a [`Call`] that borrows them from the inputs block, actions
//! answered in an [`Outcome`].
//!
//! On the wire (`wit/rules.wit`, 0.5.0) a plugin declares lists of names at configure, and each
//! call carries only the values: one block with one length per slot (`-1`: no value), then the
//! values end to end. Actions name headers and variables by their index in the declared lists,
//! and go back as three numbers each plus their values end to end in one string. This module keeps
//! that bookkeeping: [`Needs`] collects names and hands back [`EnvVar`] and [`Target`] handles
//! (their indices), [`Layout`] knows which slot each name is, [`Call`] finds a value by name in
//! the block without copying it, and [`Outcome`] is the answer as it goes back.

use crate::rules_bindings::exports::fulcrum::plugin::rules as wit;
use crate::rules_bindings::fulcrum::plugin::types::RequestFields;

/// A call's values as text and lengths (slot `i` is the `lengths[i]` bytes after slot `i - 1`'s;
/// `-1`: no value): what [`Layout::inputs`] builds for native tests and tools, and [`Inputs::block`]
/// turns into what Fulcrum passes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Inputs {
    pub text: String,
    pub lengths: Vec<i32>,
}

impl Inputs {
    /// The block Fulcrum passes for these values: the lengths as little-endian `s32`s, then the
    /// text.
    pub fn block(&self) -> Vec<u8> {
        let mut block = Vec::with_capacity(4 * self.lengths.len() + self.text.len());
        for length in &self.lengths {
            block.extend_from_slice(&length.to_le_bytes());
        }
        block.extend_from_slice(self.text.as_bytes());
        block
    }
}

/// How a header action changes its header (matched without regard to case; `wit/rules.wit`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HeaderOp {
    /// Replace every value with the action's value.
    Set,
    /// Append the value to the existing value, comma-separated; set it when absent.
    Append,
    /// Add one more header line, even when one exists.
    Add,
    /// Remove every value (the action's value is ignored).
    Unset,
    /// Append the value unless an equal comma-separated token is already there.
    Merge,
    /// Set only when the header is absent or empty.
    SetIfEmpty,
}

impl HeaderOp {
    /// The op of a `what` number (0 to 5).
    fn from_code(what: u32) -> Option<HeaderOp> {
        [HeaderOp::Set, HeaderOp::Append, HeaderOp::Add, HeaderOp::Unset, HeaderOp::Merge, HeaderOp::SetIfEmpty]
            .get(what as usize)
            .copied()
    }

    /// Its `what` number on the wire.
    fn code(self) -> u32 {
        match self {
            HeaderOp::Set => 0,
            HeaderOp::Append => 1,
            HeaderOp::Add => 2,
            HeaderOp::Unset => 3,
            HeaderOp::Merge => 4,
            HeaderOp::SetIfEmpty => 5,
        }
    }
}

/// Set (`Some`) or unset (`None`) a variable: `var` is an [`EnvVar`]'s index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnvAction {
    pub var: u32,
    pub value: Option<String>,
}

/// A call's answer, kept as it crosses (`outcome` in `wit/rules.wit`): three numbers per action
/// (what, index, the value's length) and the values end to end in one string. Fulcrum applies the
/// env actions first, then the header actions, each kind in the order given here.
///
/// Each value is written straight into that one string ([`Outcome::header_with`] lets the
/// plugin write it there itself), so an answer costs the plugin two allocations whatever the
/// number of actions, and nothing is copied again when it is returned.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Outcome {
    actions: Vec<u32>,
    values: String,
}

/// One action of an [`Outcome`], its value borrowed from it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action<'a> {
    /// Set (`Some`) or unset (`None`) variable `var`.
    Env { var: EnvVar, value: Option<&'a str> },
    /// Change header `target`.
    Header { op: HeaderOp, target: Target, value: &'a str },
}

/// The `what` of setting and unsetting a variable on the wire.
const SET_ENV: u32 = 6;
const UNSET_ENV: u32 = 7;

/// Room taken at an answer's first action when no answer of its phase was made yet: four actions
/// and their values without growing.
const FIRST_ACTIONS: usize = 12;
const FIRST_VALUES: usize = 128;

thread_local! {
    /// The lengths of the last answer's two lists, per phase (request, response). The bindings
    /// shrink each list an export returns to its length, a reallocation whenever the list has
    /// room to spare; rules answer alike from one request to the next, so the next answer of the
    /// phase makes its lists that long, and usually returns them full.
    static LAST: std::cell::Cell<[(usize, usize); 2]> = const { std::cell::Cell::new([(0, 0); 2]) };
    /// The phase of the answer being made (0: request, 1: response).
    static PHASE: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

/// For the export glue ([`crate::export_rules`]): an answer of `response`'s phase is being made.
#[doc(hidden)]
pub fn begin_phase(response: bool) {
    PHASE.set(usize::from(response));
}

impl Outcome {
    /// Set variable `var` (declared with [`Needs::env`], or named: [`Call::env_var`]).
    pub fn set_env(&mut self, var: EnvVar, value: impl AsRef<str>) {
        self.push(SET_ENV, var.0, |values| values.push_str(value.as_ref()));
    }

    /// Unset variable `var`.
    pub fn unset_env(&mut self, var: EnvVar) {
        self.push(UNSET_ENV, var.0, |_| {});
    }

    /// Change header `target` (declared with [`Needs::target`], or named: [`Call::target`]).
    pub fn header(&mut self, op: HeaderOp, target: Target, value: impl AsRef<str>) {
        self.push(op.code(), target.0, |values| values.push_str(value.as_ref()));
    }

    /// Change header `target` with the value `write` appends to the string it is given (the
    /// answer's values: whatever `write` appends is this action's value; it must only append),
    /// without a `String` of its own.
    pub fn header_with(&mut self, op: HeaderOp, target: Target, write: impl FnOnce(&mut String)) {
        self.push(op.code(), target.0, write);
    }

    fn push(&mut self, what: u32, index: u32, write: impl FnOnce(&mut String)) {
        if self.actions.capacity() == 0 {
            // Made, not grown: `reserve` on an empty vector takes the growth path (a call deeper
            // and its checks), which in a plugin costs more than the allocation itself. As long
            // as the last answer of this phase, when there was one (`LAST`).
            let (actions, values) = match LAST.with(|last| last.get()[PHASE.get()]) {
                (0, _) => (FIRST_ACTIONS, FIRST_VALUES),
                last => last,
            };
            self.actions = Vec::with_capacity(actions);
            self.values = String::with_capacity(values);
        }
        let start = self.values.len();
        write(&mut self.values);
        let length = u32::try_from(self.values.len().saturating_sub(start)).unwrap_or(u32::MAX);
        self.actions.extend_from_slice(&[what, index, length]);
    }

    /// Whether there is no action.
    pub fn is_empty(&self) -> bool {
        self.actions.is_empty()
    }

    /// The number of actions.
    pub fn len(&self) -> usize {
        self.actions.len() / 3
    }

    /// The actions in the order they were taken.
    pub fn actions(&self) -> impl Iterator<Item = Action<'_>> + '_ {
        let mut at = 0usize;
        self.actions.chunks_exact(3).filter_map(move |action| {
            let (what, index, length) = (action[0], action[1], action[2] as usize);
            let end = at.saturating_add(length);
            let value = self.values.get(at..end).unwrap_or("");
            at = end;
            match what {
                SET_ENV => Some(Action::Env { var: EnvVar(index), value: Some(value) }),
                UNSET_ENV => Some(Action::Env { var: EnvVar(index), value: None }),
                _ => HeaderOp::from_code(what).map(|op| Action::Header { op, target: Target(index), value }),
            }
        })
    }

    /// The answer as it crosses: the actions' numbers and their values end to end. Their lengths
    /// size the next answer of the same phase.
    pub fn into_wire(self) -> (Vec<u32>, String) {
        if !self.actions.is_empty() {
            let phase = PHASE.get();
            LAST.with(|last| {
                let mut sizes = last.get();
                sizes[phase] = (self.actions.len(), self.values.len());
                last.set(sizes);
            });
        }
        (self.actions, self.values)
    }
}

/// A variable the rules read or set: its index in [`Needs::env`]'s list.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct EnvVar(pub u32);

/// A header the rules' actions change: its index in [`Needs::target`]'s list.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Target(pub u32);

/// What the rules read and change, declared by name in [`crate::Rules::configure`]. Each method
/// adds a name once, compared without regard to ASCII case (headers read are kept in lower case;
/// variables and targets as first spelled: the host matches them without regard to case) and
/// returns its handle where actions need one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Needs {
    fields: RequestFields,
    request_headers: Vec<String>,
    response_headers: Vec<String>,
    env: Vec<String>,
    targets: Vec<String>,
}

impl Default for Needs {
    fn default() -> Self {
        Needs {
            fields: RequestFields::empty(),
            request_headers: Vec::new(),
            response_headers: Vec::new(),
            env: Vec::new(),
            targets: Vec::new(),
        }
    }
}

fn add(list: &mut Vec<String>, name: &str, lower: bool) -> u32 {
    let index = match list.iter().position(|n| n.eq_ignore_ascii_case(name)) {
        Some(i) => i,
        None => {
            list.push(if lower { name.to_ascii_lowercase() } else { name.to_string() });
            list.len() - 1
        }
    };
    u32::try_from(index).unwrap_or(u32::MAX)
}

impl Needs {
    /// Read request fields (method, path, query, client address, host).
    pub fn field(&mut self, fields: RequestFields) -> &mut Self {
        self.fields |= fields;
        self
    }

    /// Read a request header.
    pub fn request_header(&mut self, name: &str) -> &mut Self {
        add(&mut self.request_headers, name, true);
        self
    }

    /// Read a response header (in `on_response`).
    pub fn response_header(&mut self, name: &str) -> &mut Self {
        add(&mut self.response_headers, name, true);
        self
    }

    /// Read or set an environment variable (`UNIQUE_ID` is generated only for rules that
    /// declare it).
    pub fn env(&mut self, name: &str) -> EnvVar {
        EnvVar(add(&mut self.env, name, false))
    }

    /// Change a header (request or response) with actions.
    pub fn target(&mut self, name: &str) -> Target {
        Target(add(&mut self.targets, name, false))
    }

    pub fn fields(&self) -> RequestFields {
        self.fields
    }

    pub fn request_headers(&self) -> &[String] {
        &self.request_headers
    }

    pub fn response_headers(&self) -> &[String] {
        &self.response_headers
    }

    pub fn env_vars(&self) -> &[String] {
        &self.env
    }

    pub fn targets(&self) -> &[String] {
        &self.targets
    }
}

/// The request fields in slot order (`wit/rules.wit`): only the declared ones take a slot.
const FIELD_ORDER: [RequestFields; 5] =
    [RequestFields::METHOD, RequestFields::PATH, RequestFields::QUERY, RequestFields::CLIENT_ADDR, RequestFields::HOST];

/// Where each declared name's value is in a call's inputs.
#[derive(Debug, Clone)]
pub struct Layout {
    needs: Needs,
    /// The slot of each field of [`FIELD_ORDER`], when declared.
    fields: [Option<usize>; 5],
    request_base: usize,
    response_base: usize,
    env_base: usize,
    slots: usize,
}

impl Layout {
    pub fn new(needs: Needs) -> Layout {
        let mut fields = [None; 5];
        let mut next = 0;
        for (slot, field) in fields.iter_mut().zip(FIELD_ORDER) {
            if needs.fields.contains(field) {
                *slot = Some(next);
                next += 1;
            }
        }
        let request_base = next;
        let response_base = request_base + needs.request_headers.len();
        let env_base = response_base + needs.response_headers.len();
        let slots = env_base + needs.env.len();
        Layout { needs, fields, request_base, response_base, env_base, slots }
    }

    pub fn needs(&self) -> &Needs {
        &self.needs
    }

    /// The number of slots every call's inputs carry.
    pub fn slots(&self) -> usize {
        self.slots
    }

    /// The declaration as `configure` answers it.
    pub fn wit_needs(&self) -> wit::Needs {
        let n = &self.needs;
        wit::Needs {
            fields: n.fields,
            request_headers: n.request_headers.clone(),
            response_headers: n.response_headers.clone(),
            env: n.env.clone(),
            targets: n.targets.clone(),
        }
    }

    /// The inputs block the host would send for these values (for native tests and tools): the
    /// declared fields from `fields`, every line of each declared header (names any case), the
    /// first variable of each declared name (any case). `response` is `None` for `on_request`.
    pub fn inputs<S: AsRef<str>>(
        &self,
        fields: &Fields<'_>,
        request_headers: &[(S, S)],
        response_headers: Option<&[(S, S)]>,
        env: &[(S, S)],
    ) -> Inputs {
        let mut inputs = Inputs { text: String::new(), lengths: Vec::with_capacity(self.slots) };
        let push = |inputs: &mut Inputs, value: Option<&str>| match value {
            Some(v) => {
                inputs.text.push_str(v);
                inputs.lengths.push(i32::try_from(v.len()).unwrap_or(i32::MAX));
            }
            None => inputs.lengths.push(-1),
        };
        let values = [fields.method, fields.path, fields.query, fields.client_addr, fields.host];
        for (slot, value) in self.fields.iter().zip(values) {
            if slot.is_some() {
                push(&mut inputs, Some(value));
            }
        }
        let joined = |lines: &[(S, S)], name: &str| {
            let mut values =
                lines.iter().filter(|(n, _)| n.as_ref().eq_ignore_ascii_case(name)).map(|(_, v)| v.as_ref());
            let first = values.next()?.to_string();
            Some(values.fold(first, |mut acc, v| {
                acc.push('\n');
                acc.push_str(v);
                acc
            }))
        };
        for name in &self.needs.request_headers {
            push(&mut inputs, joined(request_headers, name).as_deref());
        }
        for name in &self.needs.response_headers {
            push(&mut inputs, response_headers.and_then(|h| joined(h, name)).as_deref());
        }
        for name in &self.needs.env {
            let value = env.iter().find(|(n, _)| n.as_ref().eq_ignore_ascii_case(name)).map(|(_, v)| v.as_ref());
            push(&mut inputs, value);
        }
        inputs
    }
}

/// Request field values for [`Layout::inputs`].
#[derive(Debug, Clone, Copy, Default)]
pub struct Fields<'a> {
    pub method: &'a str,
    pub path: &'a str,
    pub query: &'a str,
    pub client_addr: &'a str,
    pub host: &'a str,
}

/// A request phase call.
pub type RequestCall<'a> = Call<'a>;
/// A response phase call.
pub type ResponseCall<'a> = Call<'a>;

/// One call's values, borrowed from its inputs block, found by name.
#[derive(Debug, Clone, Copy)]
pub struct Call<'a> {
    layout: &'a Layout,
    text: &'a str,
    /// (start, length) per slot; length -1: no value.
    spans: &'a [(u32, i32)],
    clock: wit::Clock,
    response: Option<(u16, wit::ResponseOrigin)>,
}

impl<'a> Call<'a> {
    /// The call over `inputs` (`response`: the status and origin in `on_response`); `spans` is a
    /// buffer reused between calls. Malformed inputs (lengths that do not fit the text) read as
    /// unset slots, never a panic.
    pub fn new(
        layout: &'a Layout,
        inputs: &'a Inputs,
        clock: wit::Clock,
        response: Option<(u16, wit::ResponseOrigin)>,
        spans: &'a mut Vec<(u32, i32)>,
    ) -> Call<'a> {
        spans.clear();
        let mut at: u32 = 0;
        for &len in &inputs.lengths {
            spans.push((at, len));
            if len > 0 {
                at = at.saturating_add(len as u32);
            }
        }
        let spans: &'a Vec<(u32, i32)> = spans;
        Call { layout, text: &inputs.text, spans, clock, response }
    }

    /// The call over the block Fulcrum passes (`inputs` in `wit/rules.wit`): one little-endian
    /// `s32` length per slot of `layout`, then the values. A malformed block (too short, or values
    /// that are not UTF-8) reads as unset slots, never a panic.
    pub fn from_block(
        layout: &'a Layout,
        block: &'a [u8],
        clock: wit::Clock,
        response: Option<(u16, wit::ResponseOrigin)>,
        spans: &'a mut Vec<(u32, i32)>,
    ) -> Call<'a> {
        spans.clear();
        let head = 4 * layout.slots;
        let (lengths, text) = match (block.get(..head), block.get(head..).map(std::str::from_utf8)) {
            (Some(lengths), Some(Ok(text))) => (lengths, text),
            _ => (&[][..], ""),
        };
        // One exact reservation, then stores (no capacity check per slot, as `push` makes).
        let mut at: u32 = 0;
        spans.extend(lengths.chunks_exact(4).map(|length| {
            let len = i32::from_le_bytes([length[0], length[1], length[2], length[3]]);
            let span = (at, len);
            at = at.saturating_add(len.max(0) as u32);
            span
        }));
        let spans: &'a Vec<(u32, i32)> = spans;
        Call { layout, text, spans, clock, response }
    }

    #[inline]
    fn slot(&self, slot: usize) -> Option<&'a str> {
        let &(start, len) = self.spans.get(slot)?;
        if len < 0 {
            return None;
        }
        let start = start as usize;
        self.text.get(start..start.checked_add(len as usize)?)
    }

    #[inline]
    fn field(&self, index: usize) -> &'a str {
        self.layout.fields[index].and_then(|slot| self.slot(slot)).unwrap_or("")
    }

    /// The method (empty unless declared with [`RequestFields::METHOD`]).
    #[inline]
    pub fn method(&self) -> &'a str {
        self.field(0)
    }

    /// The path as sent, without the query (empty unless declared).
    #[inline]
    pub fn path(&self) -> &'a str {
        self.field(1)
    }

    /// The query without `?` (empty when there is none, or unless declared).
    #[inline]
    pub fn query(&self) -> &'a str {
        self.field(2)
    }

    /// The client's address as text (empty unless declared).
    #[inline]
    pub fn client_addr(&self) -> &'a str {
        self.field(3)
    }

    /// The Host (empty unless declared).
    #[inline]
    pub fn host(&self) -> &'a str {
        self.field(4)
    }

    /// A declared request header: its lines joined by `\n`, `None` when the request has none.
    /// An undeclared name traps, saying so in Fulcrum's log.
    pub fn header(&self, name: &str) -> Option<&'a str> {
        let needs = &self.layout.needs;
        match needs.request_headers.iter().position(|n| n.eq_ignore_ascii_case(name)) {
            Some(i) => self.slot(self.layout.request_base + i),
            None => undeclared("request header", name),
        }
    }

    /// The request header declared `index`-th (its position in [`Needs::request_headers`]), as
    /// [`Call::header`] without looking the name up: for rules that keep the position from
    /// `configure`. `None` also when fewer headers were declared.
    #[inline]
    pub fn request_header_at(&self, index: usize) -> Option<&'a str> {
        if index >= self.layout.needs.request_headers.len() {
            return None;
        }
        self.slot(self.layout.request_base + index)
    }

    /// A declared response header, as [`Call::header`] (`None` in `on_request`).
    pub fn response_header(&self, name: &str) -> Option<&'a str> {
        let needs = &self.layout.needs;
        match needs.response_headers.iter().position(|n| n.eq_ignore_ascii_case(name)) {
            Some(i) => self.slot(self.layout.response_base + i),
            None => undeclared("response header", name),
        }
    }

    /// Every line of every declared request header the request carries: (lower-case name, value).
    pub fn request_header_lines(&self) -> impl Iterator<Item = (&'a str, &'a str)> + 'a {
        let (layout, call) = (self.layout, *self);
        layout.needs.request_headers.iter().enumerate().flat_map(move |(i, name)| {
            call.slot(layout.request_base + i).into_iter().flat_map(|v| v.split('\n')).map(move |v| (name.as_str(), v))
        })
    }

    /// Every line of every declared response header the response carries.
    pub fn response_header_lines(&self) -> impl Iterator<Item = (&'a str, &'a str)> + 'a {
        let (layout, call) = (self.layout, *self);
        layout.needs.response_headers.iter().enumerate().flat_map(move |(i, name)| {
            call.slot(layout.response_base + i).into_iter().flat_map(|v| v.split('\n')).map(move |v| (name.as_str(), v))
        })
    }

    /// A declared environment variable (name without regard to ASCII case, as Apache's tables);
    /// `None` when it is not set. An undeclared name traps, saying so in Fulcrum's log.
    pub fn env(&self, name: &str) -> Option<&'a str> {
        self.env_at(self.env_var(name))
    }

    /// A variable by handle.
    #[inline]
    pub fn env_at(&self, var: EnvVar) -> Option<&'a str> {
        if var.0 as usize >= self.layout.needs.env.len() {
            return None;
        }
        self.slot(self.layout.env_base + var.0 as usize)
    }

    /// Every declared variable that is set: (declared name, value).
    pub fn env_vars(&self) -> impl Iterator<Item = (&'a str, &'a str)> + 'a {
        let (layout, call) = (self.layout, *self);
        layout
            .needs
            .env
            .iter()
            .enumerate()
            .filter_map(move |(i, name)| call.slot(layout.env_base + i).map(|v| (name.as_str(), v)))
    }

    /// The handle of a declared variable, for [`crate::rules::Outcome::set_env`]. Undeclared: traps.
    pub fn env_var(&self, name: &str) -> EnvVar {
        match self.layout.needs.env.iter().position(|n| n.eq_ignore_ascii_case(name)) {
            Some(i) => EnvVar(i as u32),
            None => undeclared("env variable", name),
        }
    }

    /// The handle of a declared target header, for [`crate::rules::Outcome::header`]. Undeclared:
    /// traps.
    pub fn target(&self, name: &str) -> Target {
        match self.layout.needs.targets.iter().position(|n| n.eq_ignore_ascii_case(name)) {
            Some(i) => Target(i as u32),
            None => undeclared("target header", name),
        }
    }

    /// When Fulcrum received the request, microseconds since the Unix epoch.
    pub fn request_start_us(&self) -> u64 {
        self.clock.request_start_us
    }

    /// Now (when the call was made), microseconds since the Unix epoch.
    pub fn now_us(&self) -> u64 {
        self.clock.now_us
    }

    /// The response's status (`on_response`; `None` in `on_request`).
    pub fn status(&self) -> Option<u16> {
        self.response.map(|(status, _)| status)
    }

    /// Who produced the response (`on_response`; `None` in `on_request`).
    pub fn origin(&self) -> Option<wit::ResponseOrigin> {
        self.response.map(|(_, origin)| origin)
    }

    pub fn layout(&self) -> &'a Layout {
        self.layout
    }
}

/// A name the rules did not declare: a bug in the plugin, said in Fulcrum's log, then a trap.
#[cold]
fn undeclared(what: &str, name: &str) -> ! {
    let message = format!(
        "fulcrum-sdk: {what} `{name}` was not declared in configure (declare it with fulcrum_sdk::rules::Needs)"
    );
    #[cfg(target_arch = "wasm32")]
    crate::log(crate::Level::Error, &message);
    panic!("{message}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_found_by_name_in_their_slots() {
        let mut needs = Needs::default();
        needs.field(RequestFields::CLIENT_ADDR | RequestFields::METHOD).request_header("X-A").request_header("x-b");
        needs.response_header("Content-Type");
        let id = needs.env("UNIQUE_ID");
        let set = needs.target("X-Id");
        assert_eq!(needs.env("unique_id"), id);
        assert_eq!(needs.target("x-id"), set);
        let layout = Layout::new(needs);
        assert_eq!(layout.slots(), 6);
        let fields = Fields { method: "GET", client_addr: "10.0.0.1", ..Fields::default() };
        let inputs = layout.inputs(
            &fields,
            &[("x-a", "1"), ("X-A", "2"), ("x-c", "no")],
            Some(&[("content-type", "text/plain")]),
            &[("unique_id", "u1"), ("OTHER", "x")],
        );
        assert_eq!(inputs.lengths, [3, 8, 3, -1, 10, 2]);
        let mut spans = Vec::new();
        let clock = wit::Clock { request_start_us: 1, now_us: 2 };
        let call = Call::new(&layout, &inputs, clock, None, &mut spans);
        assert_eq!((call.method(), call.client_addr(), call.path()), ("GET", "10.0.0.1", ""));
        assert_eq!(call.header("x-a"), Some("1\n2"));
        assert_eq!(call.header("X-B"), None);
        assert_eq!(call.response_header("content-type"), Some("text/plain"));
        assert_eq!(call.env("Unique_Id"), Some("u1"));
        assert_eq!(call.env_at(id), Some("u1"));
        assert_eq!(call.request_header_lines().collect::<Vec<_>>(), [("x-a", "1"), ("x-a", "2")]);
        assert_eq!(call.target("X-ID"), set);
        assert_eq!((call.request_start_us(), call.now_us(), call.status()), (1, 2, None));
    }

    /// The block Fulcrum passes reads as the text and lengths it was made from; a block that is
    /// too short or not UTF-8 reads as unset slots.
    #[test]
    fn a_block_reads_as_its_text_and_lengths() {
        let mut needs = Needs::default();
        needs.request_header("a").request_header("b").request_header("c");
        let layout = Layout::new(needs);
        let inputs = Inputs { text: "xyé".into(), lengths: vec![1, -1, 3] };
        let block = inputs.block();
        assert_eq!(block.len(), 12 + 4);
        let clock = wit::Clock { request_start_us: 0, now_us: 0 };
        let mut spans = Vec::new();
        let call = Call::from_block(&layout, &block, clock, None, &mut spans);
        assert_eq!((call.header("a"), call.header("b"), call.header("c")), (Some("x"), None, Some("yé")));
        let mut broken = block.clone();
        broken[13] = 0xff;
        for bad in [&block[..11], &broken[..]] {
            let call = Call::from_block(&layout, bad, clock, None, &mut spans);
            assert_eq!((call.header("a"), call.header("b"), call.header("c")), (None, None, None));
        }
    }

    /// Three numbers per action in the order taken, values end to end; read back as taken.
    #[test]
    fn an_outcome_is_numbers_and_one_string() {
        let mut outcome = Outcome::default();
        assert!(outcome.is_empty());
        outcome.header(HeaderOp::Add, Target(2), "a=1");
        outcome.set_env(EnvVar(1), String::from("on"));
        outcome.header(HeaderOp::Unset, Target(0), "");
        outcome.unset_env(EnvVar(0));
        outcome.header_with(HeaderOp::SetIfEmpty, Target(1), |v| v.push('é'));
        let taken = [
            Action::Header { op: HeaderOp::Add, target: Target(2), value: "a=1" },
            Action::Env { var: EnvVar(1), value: Some("on") },
            Action::Header { op: HeaderOp::Unset, target: Target(0), value: "" },
            Action::Env { var: EnvVar(0), value: None },
            Action::Header { op: HeaderOp::SetIfEmpty, target: Target(1), value: "é" },
        ];
        assert_eq!(outcome.actions().collect::<Vec<_>>(), taken);
        let (actions, values) = outcome.into_wire();
        assert_eq!(actions, [2, 2, 3, 6, 1, 2, 3, 0, 0, 7, 0, 0, 5, 1, 2]);
        assert_eq!(values, "a=1oné");
    }

    /// An answer's lists are made as long as the last answer's of its phase, so that one like
    /// it comes back full (nothing for the bindings to shrink); each phase remembers its own.
    #[test]
    fn an_answer_is_sized_by_the_last_of_its_phase() {
        let answer = |response: bool, headers: &[&str]| {
            begin_phase(response);
            let mut outcome = Outcome::default();
            for value in headers {
                outcome.header(HeaderOp::Add, Target(0), value);
            }
            outcome.into_wire()
        };
        let _ = answer(false, &["127.0.0.1"]);
        let _ = answer(true, &["a=1", "b=22", "c=333"]);
        let (actions, values) = answer(false, &["10.0.0.7"]);
        assert_eq!((actions.len(), actions.capacity()), (3, 3));
        assert_eq!(values.capacity(), "127.0.0.1".len(), "sized by the request phase's last");
        let (actions, values) = answer(true, &["a=2", "b=33", "c=444"]);
        assert_eq!((actions.len(), actions.capacity(), values.len(), values.capacity()), (9, 9, 12, 12));
    }

    #[test]
    fn malformed_inputs_read_as_unset() {
        let layout = Layout::new({
            let mut n = Needs::default();
            n.request_header("a").request_header("b");
            n
        });
        let inputs = Inputs { text: "xy".into(), lengths: vec![5, 1] };
        let mut spans = Vec::new();
        let call = Call::new(&layout, &inputs, wit::Clock { request_start_us: 0, now_us: 0 }, None, &mut spans);
        assert_eq!((call.header("a"), call.header("b")), (None, None));
    }

    #[test]
    #[should_panic(expected = "request header `x-nope` was not declared")]
    fn undeclared_names_trap_with_a_message() {
        let layout = Layout::new(Needs::default());
        let inputs = Inputs { text: String::new(), lengths: Vec::new() };
        let mut spans = Vec::new();
        let call = Call::new(&layout, &inputs, wit::Clock { request_start_us: 0, now_us: 0 }, None, &mut spans);
        let _ = call.header("x-nope");
    }
}
