//! The service each server connection runs: `GET /status` is answered here, before any
//! routing, from bytes rendered at start-up; every other request goes to the axum routes.
//!
//! Liveness is what load balancers and every vantage poll, so its cost per request is the
//! server's floor. Through axum it paid for a route lookup, boxing the request body and the
//! handler's future, a copy of the request's header map (the `HeaderMap` extractor) and a boxed
//! response body; `bench-status` measured that at 0.79× nginx. Here it is a path comparison, a
//! reference-counted clone of the body and three header inserts. The answer is the same bytes
//! and headers either way (the routes keep `/status` for HEAD and for Lambda, which has no
//! server loop), and the answers counter is the same atomic.

use crate::checks::Status;
use crate::metrics::{self, Metrics};
use axum::body::Body;
use bytes::Bytes;
use http::{header, HeaderMap, HeaderName, HeaderValue, Method, Request, Response};
use http_body_util::{Either, Full};
use hyper::body::Incoming;
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use vantage_runtime::http_server::TowerToHyperService;

/// The answer's body: the pre-rendered liveness bytes, or whatever a route returned.
pub type AppBody = Either<Full<Bytes>, Body>;

/// The status endpoint as [`crate::router::router`] builds it: the routes, and the liveness
/// answer served ahead of them.
#[derive(Clone)]
pub struct App {
    routes: axum::Router,
    /// Serves the routes to hyper; a clone of the router per request, as axum itself does.
    routed: TowerToHyperService<axum::Router>,
    liveness: Arc<Liveness>,
}

/// What `GET /status` answers, rendered once.
pub(crate) struct Liveness {
    pub(crate) body: Bytes,
    /// `body`'s length; set as axum sets it, so the answer's bytes are the routes' bytes.
    pub(crate) length: HeaderValue,
    pub(crate) region: HeaderValue,
    pub(crate) metrics: Arc<Metrics>,
}

impl App {
    pub(crate) fn new(routes: axum::Router, liveness: Liveness) -> Self {
        App {
            routed: TowerToHyperService::new(routes.clone()),
            routes,
            liveness: Arc::new(liveness),
        }
    }

    /// The axum routes alone (`/status` included): what Lambda invocations go through, and
    /// what the benchmark serves as the before-figure.
    pub fn routes(&self) -> &axum::Router {
        &self.routes
    }

    /// The answer to `GET /status`: 200 (`Response::new`'s status), the pre-rendered body,
    /// the common headers.
    fn liveness(&self, request: &HeaderMap) -> Response<AppBody> {
        let l = &self.liveness;
        l.metrics.answer(metrics::Path::Status, Status::Pass);
        let mut response = Response::new(Either::Left(Full::new(l.body.clone())));
        set_headers(response.headers_mut(), &l.region, request);
        response
            .headers_mut()
            .insert(header::CONTENT_LENGTH, l.length.clone());
        response
    }
}

/// The headers of every health answer: media type, no caching, the Region, the caller's
/// trace id echoed.
pub(crate) fn set_headers(h: &mut HeaderMap, region: &HeaderValue, request: &HeaderMap) {
    h.reserve(5);
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(crate::health::CONTENT_TYPE),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        HeaderName::from_static(crate::router::REGION_HEADER),
        region.clone(),
    );
    if let Some(trace) = request.get(crate::router::TRACE_HEADER) {
        h.insert(
            HeaderName::from_static(crate::router::TRACE_HEADER),
            trace.clone(),
        );
    }
}

type Routed = Pin<Box<dyn Future<Output = Result<Response<Body>, Infallible>> + Send>>;

/// The future of one request: ready at once for liveness, else the routes' answer.
pub enum AppFuture {
    Ready(Option<Response<AppBody>>),
    Routed(Routed),
}

impl Future for AppFuture {
    type Output = Result<Response<AppBody>, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.get_mut() {
            AppFuture::Ready(response) => Poll::Ready(Ok(response
                .take()
                .expect("an AppFuture is not polled after it completed"))),
            AppFuture::Routed(future) => future
                .as_mut()
                .poll(cx)
                .map(|r| r.map(|response| response.map(Either::Right))),
        }
    }
}

impl hyper::service::Service<Request<Incoming>> for App {
    type Response = Response<AppBody>;
    type Error = Infallible;
    type Future = AppFuture;

    fn call(&self, request: Request<Incoming>) -> AppFuture {
        if request.method() == Method::GET && request.uri().path() == "/status" {
            return AppFuture::Ready(Some(self.liveness(request.headers())));
        }
        AppFuture::Routed(Box::pin(self.routed.call(request)))
    }
}
