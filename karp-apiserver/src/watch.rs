//! Watch streams: newline-delimited JSON events over a streaming body.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body::Frame;
use http_body_util::{BodyExt, StreamBody};
use serde_json::{json, Value};
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender};
use tokio::time::{Instant, Interval, Sleep};

use crate::registry::ResourceDef;
use crate::selector::{FieldSelector, LabelSelector};
use crate::store::{Event, EventKind, Msg};
use crate::table::{table, Include};
use crate::{Inner, ResponseBody};

/// What a watcher wants to see and how.
pub(crate) struct WatchFilter {
    pub def: ResourceDef,
    pub labels: LabelSelector,
    pub fields: FieldSelector,
    pub bookmarks: bool,
    pub table: Option<Include>,
}

impl WatchFilter {
    fn matches(&self, obj: &Value) -> bool {
        let seen = crate::events::view(&self.def, obj);
        self.labels.matches(&seen) && self.fields.matches(&seen)
    }

    /// The event type to send for a store event, if any (selector transitions become ADDED/DELETED).
    fn classify(&self, ev: &Event) -> Option<&'static str> {
        let now = self.matches(&ev.object);
        match ev.kind {
            EventKind::Added => now.then_some("ADDED"),
            EventKind::Deleted => now.then_some("DELETED"),
            EventKind::Modified => {
                let before = ev.old.as_ref().is_some_and(|o| self.matches(o));
                match (before, now) {
                    (true, true) => Some("MODIFIED"),
                    (false, true) => Some("ADDED"),
                    (true, false) => Some("DELETED"),
                    (false, false) => None,
                }
            }
        }
    }
}

pub(crate) struct Line {
    filter: WatchFilter,
    headers_sent: bool,
}

impl Line {
    fn encode(&mut self, kind: &str, obj: &Value) -> Bytes {
        #[derive(serde::Serialize)]
        struct Line<'a> {
            #[serde(rename = "type")]
            kind: &'a str,
            object: &'a Value,
        }
        let rendered = crate::events::view(&self.filter.def, obj);
        let table_object;
        let object: &Value = match self.filter.table {
            Some(include) => {
                table_object = table(
                    &self.filter.def,
                    std::slice::from_ref(&rendered),
                    None,
                    include,
                    !self.headers_sent,
                );
                self.headers_sent = true;
                &table_object
            }
            None => &rendered,
        };
        let mut v = serde_json::to_vec(&Line { kind, object }).unwrap_or_default();
        v.push(b'\n');
        Bytes::from(v)
    }

    fn bookmark(&self, rv: u64, initial_end: bool) -> Bytes {
        let mut meta = json!({"resourceVersion": rv.to_string()});
        if initial_end {
            meta["annotations"] = json!({"k8s.io/initial-events-end": "true"});
        }
        let obj = json!({"kind": self.filter.def.kind, "apiVersion": self.filter.def.api_version(), "metadata": meta});
        let mut v =
            serde_json::to_vec(&json!({"type": "BOOKMARK", "object": obj})).unwrap_or_default();
        v.push(b'\n');
        Bytes::from(v)
    }
}

/// One line with an ERROR event carrying a Status (410 Expired and the like).
pub(crate) fn error_line(status: &Value) -> Bytes {
    let mut v = serde_json::to_vec(&json!({"type": "ERROR", "object": status})).unwrap_or_default();
    v.push(b'\n');
    Bytes::from(v)
}

struct WatchState {
    pending: VecDeque<Bytes>,
    rx: UnboundedReceiver<Msg>,
    tx: UnboundedSender<Msg>,
    inner: Arc<Inner>,
    line: Line,
    bookmarks: Option<Interval>,
    deadline: Option<Pin<Box<Sleep>>>,
    done: bool,
}

async fn tick(i: &mut Option<Interval>) {
    match i {
        Some(i) => {
            i.tick().await;
        }
        None => std::future::pending().await,
    }
}

async fn expire(d: &mut Option<Pin<Box<Sleep>>>) {
    match d {
        Some(d) => d.as_mut().await,
        None => std::future::pending().await,
    }
}

/// The parameters of one watch response.
pub(crate) struct WatchStart {
    pub initial: Vec<Arc<Value>>,
    pub replay: Vec<Arc<Event>>,
    pub rx: UnboundedReceiver<Msg>,
    pub tx: UnboundedSender<Msg>,
    /// Send a BOOKMARK with `k8s.io/initial-events-end` at this resourceVersion after the initial events.
    pub initial_end: Option<u64>,
    pub timeout: Option<Duration>,
}

/// Builds the streaming body of a watch.
pub(crate) fn body(
    inner: Arc<Inner>,
    filter: WatchFilter,
    start: WatchStart,
    bookmark_every: Duration,
) -> ResponseBody {
    let mut line = Line {
        filter,
        headers_sent: false,
    };
    let mut pending = VecDeque::new();
    for obj in &start.initial {
        if line.filter.matches(obj) {
            pending.push_back(line.encode("ADDED", obj));
        }
    }
    if let Some(rv) = start.initial_end {
        pending.push_back(line.bookmark(rv, true));
    }
    for ev in &start.replay {
        if let Some(kind) = line.filter.classify(ev) {
            pending.push_back(line.encode(kind, &ev.object));
        }
    }
    let bookmarks =
        (line.filter.bookmarks && line.filter.table.is_none() && !bookmark_every.is_zero())
            .then(|| tokio::time::interval_at(Instant::now() + bookmark_every, bookmark_every));
    let deadline = start.timeout.map(|t| Box::pin(tokio::time::sleep(t)));
    let st = WatchState {
        pending,
        rx: start.rx,
        tx: start.tx,
        inner,
        line,
        bookmarks,
        deadline,
        done: false,
    };
    let stream = futures::stream::unfold(st, |mut st| async move {
        loop {
            if let Some(b) = st.pending.pop_front() {
                return Some((Ok::<_, Infallible>(Frame::data(b)), st));
            }
            if st.done {
                return None;
            }
            tokio::select! {
                msg = st.rx.recv() => match msg {
                    Some(Msg::Event(ev)) => {
                        if let Some(kind) = st.line.filter.classify(&ev) {
                            let b = st.line.encode(kind, &ev.object);
                            st.pending.push_back(b);
                        }
                    }
                    Some(Msg::Bookmark(rv)) => {
                        if st.line.filter.bookmarks {
                            let b = st.line.bookmark(rv, false);
                            st.pending.push_back(b);
                        }
                    }
                    None => return None,
                },
                _ = tick(&mut st.bookmarks) => {
                    st.inner.state().bookmark(&st.tx);
                }
                _ = expire(&mut st.deadline) => {
                    st.done = true;
                }
            }
        }
    });
    StreamBody::new(stream).boxed_unsync()
}
