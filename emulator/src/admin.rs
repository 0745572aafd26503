//! The admin API: JSON over HTTP on its own port, never behind a fault switch.
//!
//! | request | answer |
//! |---|---|
//! | `POST /_admin/regions/{name}/fault` `{"mode":"down"}` (optional `"source":"127.0.0.3"`, or `"device":"meter$7"` for the IoT Hub modes) | 200 + the switch's state; 400 bad body; 404 unknown name |
//! | `GET /_admin/regions/{name}/fault` | the switch's state |
//! | `GET /_admin/stats` | `{"regions":{name:{events,unique_ids,duplicates,without_id,by_protocol:{...}}}}` |
//! | `GET /_admin/regions/{name}/ids` | `{"ids":[first-arrival order, each once],"duplicates":{id:count}}` |
//! | `GET /_admin/regions/{name}/records` | every record (bodies base64) |
//! | `GET /_admin/regions/{name}/iot-hub` | `{"events":{reason:count}}`: IoT Hub connections by outcome (`connected`, `connack-5-sas-signature`, `closed-qos2`, ...) |
//! | `POST /_admin/reset` | clears every region's records, stats, idempotency keys and faults |
//!
//! `{name}` is a region or a proxy (proxies only have `fault`).

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};

use crate::fault::{FaultRequest, FaultSwitch};
use crate::iothub::IotHubEvents;
use crate::store::Store;

pub(crate) struct AdminRegion {
    pub(crate) name: String,
    pub(crate) store: Store,
    pub(crate) switch: FaultSwitch,
    pub(crate) iot_hub: IotHubEvents,
}

pub(crate) struct AdminState {
    pub(crate) regions: Vec<AdminRegion>,
    pub(crate) proxies: Vec<(String, FaultSwitch)>,
}

type Shared = Arc<AdminState>;

pub(crate) fn router(state: Shared) -> Router {
    Router::new()
        .route(
            "/_admin/regions/{name}/fault",
            post(set_fault).get(get_fault),
        )
        .route("/_admin/regions/{name}/ids", get(ids))
        .route("/_admin/regions/{name}/records", get(records))
        .route("/_admin/regions/{name}/iot-hub", get(iot_hub))
        .route("/_admin/stats", get(stats))
        .route("/_admin/reset", post(reset))
        .fallback(|| async { error(StatusCode::NOT_FOUND, "no such admin path".into()) })
        .with_state(state)
}

fn error(status: StatusCode, why: String) -> Response {
    (status, Json(json!({ "error": why }))).into_response()
}

fn switch<'a>(state: &'a AdminState, name: &str) -> Option<&'a FaultSwitch> {
    state
        .regions
        .iter()
        .find(|r| r.name == name)
        .map(|r| &r.switch)
        .or_else(|| {
            state
                .proxies
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, s)| s)
        })
}

fn region<'a>(state: &'a AdminState, name: &str) -> Option<&'a AdminRegion> {
    state.regions.iter().find(|r| r.name == name)
}

fn store<'a>(state: &'a AdminState, name: &str) -> Option<&'a Store> {
    region(state, name).map(|r| &r.store)
}

pub(crate) fn fault_state(s: &FaultSwitch) -> Value {
    let sources: BTreeMap<String, Value> = s
        .source_faults()
        .into_iter()
        .map(|(ip, f)| (ip.to_string(), json!(f)))
        .collect();
    let devices: BTreeMap<String, Value> = s
        .device_faults()
        .into_iter()
        .map(|(d, f)| (d, json!(f)))
        .collect();
    json!({ "fault": s.region_fault(), "sources": sources, "devices": devices })
}

async fn set_fault(State(state): State<Shared>, Path(name): Path<String>, body: Bytes) -> Response {
    let Some(s) = switch(&state, &name) else {
        return error(
            StatusCode::NOT_FOUND,
            format!("no region or proxy named {name:?}"),
        );
    };
    let req = match FaultRequest::from_json(&body) {
        Ok(r) => r,
        Err(why) => return error(StatusCode::BAD_REQUEST, why),
    };
    match (&req.source, &req.device) {
        (Some(ip), _) => s.set_for(*ip, req.fault),
        (None, Some(device)) => {
            if let Err(why) = s.set_for_device(device, req.fault) {
                return error(StatusCode::BAD_REQUEST, why);
            }
        }
        (None, None) => s.set(req.fault),
    }
    tracing::info!(target = %name, fault = ?req.fault, source = ?req.source, device = ?req.device, "fault set");
    Json(fault_state(s)).into_response()
}

async fn get_fault(State(state): State<Shared>, Path(name): Path<String>) -> Response {
    match switch(&state, &name) {
        Some(s) => Json(fault_state(s)).into_response(),
        None => error(
            StatusCode::NOT_FOUND,
            format!("no region or proxy named {name:?}"),
        ),
    }
}

async fn ids(State(state): State<Shared>, Path(name): Path<String>) -> Response {
    let Some(store) = store(&state, &name) else {
        return error(StatusCode::NOT_FOUND, format!("no region named {name:?}"));
    };
    let ids = store.ids();
    let duplicates: BTreeMap<&str, u64> = ids
        .iter()
        .map(|id| (id.as_str(), store.id_count(id)))
        .filter(|(_, n)| *n > 1)
        .collect();
    Json(json!({ "ids": ids, "duplicates": duplicates })).into_response()
}

async fn records(State(state): State<Shared>, Path(name): Path<String>) -> Response {
    match store(&state, &name) {
        Some(store) => Json(store.records()).into_response(),
        None => error(StatusCode::NOT_FOUND, format!("no region named {name:?}")),
    }
}

async fn iot_hub(State(state): State<Shared>, Path(name): Path<String>) -> Response {
    match region(&state, &name) {
        Some(r) => Json(json!({ "events": r.iot_hub.snapshot() })).into_response(),
        None => error(StatusCode::NOT_FOUND, format!("no region named {name:?}")),
    }
}

async fn stats(State(state): State<Shared>) -> Response {
    let regions: BTreeMap<&str, _> = state
        .regions
        .iter()
        .map(|r| (r.name.as_str(), r.store.stats()))
        .collect();
    Json(json!({ "regions": regions })).into_response()
}

async fn reset(State(state): State<Shared>) -> Response {
    for r in &state.regions {
        r.store.reset();
        r.switch.clear();
        r.iot_hub.reset();
    }
    for (_, switch) in &state.proxies {
        switch.clear();
    }
    Json(json!({ "reset": true })).into_response()
}
