//! A real OTLP receiver for the tests: the `opentelemetry-proto` crate's
//! generated gRPC services on a tonic server, or the OTLP/HTTP protobuf
//! endpoints (`/v1/logs`, `/v1/traces`, `/v1/metrics`) on hyper. It keeps
//! what it receives for the tests to inspect.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use opentelemetry_proto::tonic::collector::logs::v1::logs_service_server::{
    LogsService, LogsServiceServer,
};
use opentelemetry_proto::tonic::collector::logs::v1::{
    ExportLogsServiceRequest, ExportLogsServiceResponse,
};
use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_server::{
    MetricsService, MetricsServiceServer,
};
use opentelemetry_proto::tonic::collector::metrics::v1::{
    ExportMetricsServiceRequest, ExportMetricsServiceResponse,
};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::logs::v1::LogRecord;
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message as _;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// Everything received so far.
#[derive(Default)]
pub struct Received {
    /// Log records with their resource's `service.name`.
    pub logs: Vec<(String, LogRecord)>,
    /// Spans with their resource's `service.name`.
    pub spans: Vec<(String, Span)>,
    /// Names of metrics received.
    pub metrics: Vec<String>,
    /// Export requests received, per signal.
    pub requests: usize,
}

fn service_name(attrs: &[KeyValue]) -> String {
    attrs
        .iter()
        .find(|a| a.key == "service.name")
        .and_then(|a| str_value(a.value.as_ref()))
        .unwrap_or_default()
}

/// The string in an `AnyValue`, if it holds one.
pub fn str_value(v: Option<&AnyValue>) -> Option<String> {
    match v?.value.as_ref()? {
        any_value::Value::StringValue(s) => Some(s.clone()),
        any_value::Value::IntValue(i) => Some(i.to_string()),
        _ => None,
    }
}

/// An attribute's value as text.
pub fn attr(attrs: &[KeyValue], key: &str) -> Option<String> {
    attrs
        .iter()
        .find(|a| a.key == key)
        .and_then(|a| str_value(a.value.as_ref()))
}

/// What was received, and a signal bumped after every export request.
#[derive(Default)]
pub struct Shared {
    received: Mutex<Received>,
    arrived: tokio::sync::Notify,
}

impl Shared {
    /// Locks what was received.
    pub fn lock(&self) -> std::sync::MutexGuard<'_, Received> {
        self.received.lock().unwrap()
    }

    fn take(&self, f: impl FnOnce(&mut Received)) {
        let mut r = self.lock();
        r.requests += 1;
        f(&mut r);
        drop(r);
        self.arrived.notify_waiters();
    }
}

type State = Arc<Shared>;

fn take_logs(state: &State, req: ExportLogsServiceRequest) {
    state.take(|s| {
        for rl in req.resource_logs {
            let name = service_name(rl.resource.as_ref().map_or(&[][..], |r| &r.attributes));
            for sl in rl.scope_logs {
                for r in sl.log_records {
                    s.logs.push((name.clone(), r));
                }
            }
        }
    });
}

fn take_spans(state: &State, req: ExportTraceServiceRequest) {
    state.take(|s| {
        for rs in req.resource_spans {
            let name = service_name(rs.resource.as_ref().map_or(&[][..], |r| &r.attributes));
            for ss in rs.scope_spans {
                for sp in ss.spans {
                    s.spans.push((name.clone(), sp));
                }
            }
        }
    });
}

fn take_metrics(state: &State, req: ExportMetricsServiceRequest) {
    state.take(|s| {
        for rm in req.resource_metrics {
            for sm in rm.scope_metrics {
                for m in sm.metrics {
                    s.metrics.push(m.name);
                }
            }
        }
    });
}

#[derive(Clone)]
struct Grpc(State);

#[tonic::async_trait]
impl LogsService for Grpc {
    async fn export(
        &self,
        req: tonic::Request<ExportLogsServiceRequest>,
    ) -> Result<tonic::Response<ExportLogsServiceResponse>, tonic::Status> {
        take_logs(&self.0, req.into_inner());
        Ok(tonic::Response::new(ExportLogsServiceResponse::default()))
    }
}

#[tonic::async_trait]
impl TraceService for Grpc {
    async fn export(
        &self,
        req: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        take_spans(&self.0, req.into_inner());
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

#[tonic::async_trait]
impl MetricsService for Grpc {
    async fn export(
        &self,
        req: tonic::Request<ExportMetricsServiceRequest>,
    ) -> Result<tonic::Response<ExportMetricsServiceResponse>, tonic::Status> {
        take_metrics(&self.0, req.into_inner());
        Ok(tonic::Response::new(ExportMetricsServiceResponse::default()))
    }
}

/// A running receiver.
pub struct Receiver {
    pub addr: SocketAddr,
    pub state: State,
    stop: CancellationToken,
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// A free loopback port (for a collector that starts later).
pub async fn free_addr() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    l.local_addr().unwrap()
}

impl Receiver {
    /// OTLP/gRPC on `addr` (`127.0.0.1:0` for any port).
    pub async fn grpc(addr: SocketAddr) -> Receiver {
        let listener = TcpListener::bind(addr).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = State::default();
        let stop = CancellationToken::new();
        let svc = Grpc(state.clone());
        let s = stop.clone();
        tokio::spawn(async move {
            tonic::transport::Server::builder()
                .add_service(LogsServiceServer::new(svc.clone()))
                .add_service(TraceServiceServer::new(svc.clone()))
                .add_service(MetricsServiceServer::new(svc))
                .serve_with_incoming_shutdown(
                    tonic::transport::server::TcpIncoming::from(listener),
                    s.cancelled_owned(),
                )
                .await
                .unwrap();
        });
        Receiver { addr, state, stop }
    }

    /// OTLP/HTTP with protobuf bodies on `addr`.
    pub async fn http(addr: SocketAddr) -> Receiver {
        let listener = TcpListener::bind(addr).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = State::default();
        let stop = CancellationToken::new();
        let (st, s) = (state.clone(), stop.clone());
        tokio::spawn(async move {
            loop {
                let (tcp, _) = tokio::select! {
                    r = listener.accept() => r.unwrap(),
                    () = s.cancelled() => return,
                };
                let st = st.clone();
                let conn_stop = s.clone();
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                        let st = st.clone();
                        async move {
                            let path = req.uri().path().to_owned();
                            let body = req.into_body().collect().await.unwrap().to_bytes();
                            let out: Vec<u8> = match path.as_str() {
                                "/v1/logs" => {
                                    take_logs(&st, ExportLogsServiceRequest::decode(body).unwrap());
                                    ExportLogsServiceResponse::default().encode_to_vec()
                                }
                                "/v1/traces" => {
                                    take_spans(
                                        &st,
                                        ExportTraceServiceRequest::decode(body).unwrap(),
                                    );
                                    ExportTraceServiceResponse::default().encode_to_vec()
                                }
                                "/v1/metrics" => {
                                    take_metrics(
                                        &st,
                                        ExportMetricsServiceRequest::decode(body).unwrap(),
                                    );
                                    ExportMetricsServiceResponse::default().encode_to_vec()
                                }
                                _ => {
                                    return Ok::<_, Infallible>(
                                        Response::builder()
                                            .status(404)
                                            .body(Full::new(Bytes::new()))
                                            .unwrap(),
                                    );
                                }
                            };
                            Ok(Response::builder()
                                .header("content-type", "application/x-protobuf")
                                .body(Full::new(Bytes::from(out)))
                                .unwrap())
                        }
                    });
                    let builder =
                        hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
                    let conn = builder.serve_connection(TokioIo::new(tcp), svc);
                    tokio::select! {
                        _ = conn => {}
                        () = conn_stop.cancelled() => {}
                    }
                });
            }
        });
        Receiver { addr, state, stop }
    }

    /// Waits up to `secs` until `pred` holds for what was received,
    /// checking after every export request that arrives.
    pub async fn wait_until(&self, what: &str, secs: u64, pred: impl Fn(&Received) -> bool) {
        let check = async {
            loop {
                // Registered before checking, so no export slips between.
                let arrived = self.state.arrived.notified();
                if pred(&self.state.lock()) {
                    return;
                }
                arrived.await;
            }
        };
        if tokio::time::timeout(Duration::from_secs(secs), check)
            .await
            .is_err()
        {
            let s = self.state.lock();
            panic!(
                "timed out waiting for {what}: {} logs, {} spans, {} metrics received",
                s.logs.len(),
                s.spans.len(),
                s.metrics.len()
            );
        }
    }
}
