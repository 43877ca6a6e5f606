//! Tasks (the MCP tasks extension): which tool made each task, and whose
//! task it is.
//!
//! A task's output reaches the agent later, through `tasks/result`
//! (2025-11-25) or inlined in `tasks/get` (2026-07-28). The gateway learns
//! each task id from the `tools/call` result that created it, so that the
//! later result is checked by the response chain as the result of that
//! tool (plugins see the tool as the target), and so that only the
//! principal who created a task can read it: any other principal, and any
//! id this gateway never saw created, gets no task output (`Unknown task`).

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

use serde::Deserialize;

use crate::limits;

/// Task methods that name one task in `params.taskId`.
pub fn names_a_task(method: &str) -> bool {
    matches!(
        method,
        "tasks/get" | "tasks/result" | "tasks/update" | "tasks/cancel"
    )
}

/// Task methods whose result carries a tool's output (or its progress).
pub fn delivers_output(method: &str) -> bool {
    matches!(method, "tasks/get" | "tasks/result")
}

type Key = (String, String, String);

/// Task id → tool, per server and principal; bounded, oldest forgotten first.
#[derive(Default)]
pub struct Tasks {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    tools: HashMap<Key, String>,
    order: VecDeque<Key>,
}

impl Tasks {
    /// Remembers that `subject`'s call of `tool` on `server` created `task`.
    pub fn learn(&self, server: &str, subject: &str, task: &str, tool: &str) {
        let key = (server.to_owned(), subject.to_owned(), task.to_owned());
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        if inner.tools.insert(key.clone(), tool.to_owned()).is_none() {
            inner.order.push_back(key);
        }
        while inner.order.len() > limits::MAX_TRACKED_TASKS {
            if let Some(old) = inner.order.pop_front() {
                inner.tools.remove(&old);
            }
        }
    }

    /// The tool that made `subject`'s task `task` on `server`, if it is theirs.
    pub fn tool_of(&self, server: &str, subject: &str, task: &str) -> Option<String> {
        let key = (server.to_owned(), subject.to_owned(), task.to_owned());
        self.inner
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .tools
            .get(&key)
            .cloned()
    }
}

#[derive(Deserialize)]
struct Created<'a> {
    #[serde(borrow)]
    result: Option<CreatedResult<'a>>,
}

#[derive(Deserialize)]
struct CreatedResult<'a> {
    #[serde(borrow, rename = "resultType")]
    result_type: Option<std::borrow::Cow<'a, str>>,
    #[serde(borrow, rename = "taskId")]
    task_id: Option<std::borrow::Cow<'a, str>>,
    #[serde(borrow)]
    task: Option<Nested<'a>>,
}

#[derive(Deserialize)]
struct Nested<'a> {
    #[serde(borrow, rename = "taskId")]
    task_id: Option<std::borrow::Cow<'a, str>>,
}

/// The task id a `tools/call` response created: `resultType: "task"` with
/// `taskId` (2026-07-28), or `task.taskId` (2025-11-25).
pub fn created_task(raw: &[u8]) -> Option<String> {
    if !raw.windows(8).any(|w| w == b"\"taskId\"") {
        return None;
    }
    let result = serde_json::from_slice::<Created<'_>>(raw).ok()?.result?;
    match (result.result_type.as_deref(), result.task_id, result.task) {
        (Some("task"), Some(id), _) => Some(id.into_owned()),
        (None, _, Some(Nested { task_id: Some(id) })) => Some(id.into_owned()),
        _ => None,
    }
}

/// `params.taskId` of a task request.
pub fn requested_task(raw: &[u8]) -> Option<String> {
    #[derive(Deserialize)]
    struct Req<'a> {
        #[serde(borrow)]
        params: Option<Params<'a>>,
    }
    #[derive(Deserialize)]
    struct Params<'a> {
        #[serde(borrow, rename = "taskId")]
        task_id: Option<std::borrow::Cow<'a, str>>,
    }
    serde_json::from_slice::<Req<'_>>(raw)
        .ok()?
        .params?
        .task_id
        .map(|c| c.into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn learns_both_wire_forms_and_nothing_else() {
        let cases: &[(&str, Option<&str>)] = &[
            (
                r#"{"jsonrpc":"2.0","id":1,"result":{"resultType":"task","taskId":"t-26","status":"working"}}"#,
                Some("t-26"),
            ),
            (
                r#"{"jsonrpc":"2.0","id":1,"result":{"task":{"taskId":"t-25","status":"working"}}}"#,
                Some("t-25"),
            ),
            // A complete result that mentions a taskId creates nothing.
            (
                r#"{"jsonrpc":"2.0","id":1,"result":{"resultType":"complete","taskId":"x","content":[]}}"#,
                None,
            ),
            (
                r#"{"jsonrpc":"2.0","id":1,"result":{"content":[{"type":"text","text":"\"taskId\""}]}}"#,
                None,
            ),
            (r#"{"jsonrpc":"2.0","id":1,"result":{"content":[]}}"#, None),
        ];
        for (raw, want) in cases {
            assert_eq!(created_task(raw.as_bytes()).as_deref(), *want, "{raw}");
        }
        assert_eq!(
            requested_task(
                br#"{"jsonrpc":"2.0","id":2,"method":"tasks/get","params":{"taskId":"t-26"}}"#
            )
            .as_deref(),
            Some("t-26")
        );
    }

    #[test]
    fn a_task_is_only_its_creators_and_the_table_is_bounded() {
        let t = Tasks::default();
        t.learn("crm", "alice", "t1", "export");
        assert_eq!(t.tool_of("crm", "alice", "t1").as_deref(), Some("export"));
        assert_eq!(t.tool_of("crm", "bob", "t1"), None);
        assert_eq!(t.tool_of("hr", "alice", "t1"), None);
        for i in 0..limits::MAX_TRACKED_TASKS {
            t.learn("crm", "alice", &format!("n{i}"), "export");
        }
        assert_eq!(t.tool_of("crm", "alice", "t1"), None, "oldest forgotten");
        let inner = t.inner.lock().unwrap();
        assert_eq!(inner.tools.len(), limits::MAX_TRACKED_TASKS);
        assert_eq!(inner.order.len(), limits::MAX_TRACKED_TASKS);
    }
}
