//! Endpoint settings for client certificates and IoT Hub's transport:
//!
//! * `client_cert` — path of a PEM file: the client certificate, then any intermediates;
//! * `client_key` — path of a PEM file holding its private key, or
//! * `client_key_env` — the name of an environment variable holding that PEM;
//! * `transport` — IoT Hub only: `"mqtt"` (port 8883, the default) or `"websockets"`
//!   (port 443 unless `HostName` names one).
//!
//! They apply to `iot-hub` (X.509 device authentication, with `x509=true` in the
//! connection string), `mqtt` and `http` (mutual TLS). Kept apart from the rest of the
//! loader so these settings can grow without touching it.

use std::ops::Range;

use super::{ConfigError, ErrorKind, Loader, P, RawEndpoint, S};
use crate::client_cert::{ClientCert, ClientCertError};
use crate::config::connstr;
use crate::config::raw::IOT_HUB_TRANSPORT;
use crate::spec::{IotHubSpec, IotHubTransport, ProtocolSpec, Secret};

/// IoT Hub's MQTT-over-WebSockets port.
pub(crate) const IOT_HUB_WEBSOCKET_PORT: u16 = 443;

impl Loader<'_> {
    /// Refuses the settings of this module on protocols they do not apply to.
    pub(super) fn client_auth_applies(
        &self,
        prefix: &str,
        e: &RawEndpoint,
        p: P,
        protocol: &str,
    ) -> Result<(), ConfigError> {
        let cert_keys = [
            ("client_cert", e.client_cert.as_ref().map(S::span)),
            ("client_key", e.client_key.as_ref().map(S::span)),
            ("client_key_env", e.client_key_env.as_ref().map(S::span)),
        ];
        let cert_ok = matches!(p, P::IotHub | P::Mqtt | P::Http);
        let transport = ("transport", e.transport.as_ref().map(S::span));
        for (k, span, ok) in cert_keys.into_iter().map(|(k, s)| (k, s, cert_ok)).chain([(
            transport.0,
            transport.1,
            p == P::IotHub,
        )]) {
            if let (Some(span), false) = (span, ok) {
                return Err(self.invalid(
                    &format!("{prefix}.{k}"),
                    &span,
                    format!("`{k}` does not apply to protocol {protocol}"),
                ));
            }
        }
        Ok(())
    }

    /// The endpoint's client certificate, if `client_cert` is given. `tls` says whether
    /// the endpoint's URL uses TLS at all (a certificate needs it).
    pub(super) fn client_cert(
        &mut self,
        prefix: &str,
        e: &RawEndpoint,
        table: &Range<usize>,
        tls: bool,
    ) -> Result<Option<ClientCert>, ConfigError> {
        let key = |k: &str| format!("{prefix}.{k}");
        let Some(cert) = &e.client_cert else {
            if let Some(k) = e.client_key.as_ref().or(e.client_key_env.as_ref()) {
                return Err(ConfigError::new(
                    ErrorKind::Missing,
                    key("client_cert"),
                    "missing: a client key needs client_cert (the certificate's PEM file)",
                )
                .at(self.line(&k.span())));
            }
            return Ok(None);
        };
        self.seen(&key("client_cert"), &cert.span());
        if !tls {
            return Err(self.invalid(
                &key("client_cert"),
                &cert.span(),
                "a client certificate needs TLS: an mqtts:// or https:// url, or an IoT Hub \
                 connection string without UseDevelopmentEmulator=true",
            ));
        }
        if cert.get_ref().is_empty() {
            return Err(self.invalid(&key("client_cert"), &cert.span(), "must not be empty"));
        }
        let cert_path = self.resolve(cert.get_ref());
        let loaded = match (&e.client_key, &e.client_key_env) {
            (Some(_), Some(second)) => {
                return Err(ConfigError::new(
                    ErrorKind::Secret,
                    key("client_key"),
                    "give only one of `client_key` and `client_key_env`",
                )
                .at(self.line(&second.span())));
            }
            (None, None) => {
                return Err(ConfigError::new(
                    ErrorKind::Missing,
                    key("client_key"),
                    "missing: client_cert needs client_key (a PEM file) or client_key_env",
                )
                .at(self.line(table)));
            }
            (Some(k), None) => {
                self.seen(&key("client_key"), &k.span());
                let key_path = self.resolve(k.get_ref());
                (
                    ClientCert::from_files(&cert_path, &key_path),
                    key("client_key"),
                    k.span(),
                )
            }
            (None, Some(var)) => {
                self.seen(&key("client_key_env"), &var.span());
                let name = var.get_ref();
                let pem = (self.env)(name).ok_or_else(|| {
                    ConfigError::new(
                        ErrorKind::Secret,
                        key("client_key_env"),
                        format!("environment variable `{name}` is not set or not UTF-8"),
                    )
                    .at(self.line(&var.span()))
                })?;
                (
                    ClientCert::from_cert_file(&cert_path, Secret::new(pem), format!("env {name}")),
                    key("client_key_env"),
                    var.span(),
                )
            }
        };
        match loaded {
            (Ok(c), _, _) => Ok(Some(c)),
            (Err(err), key_key, key_span) => {
                // Name the setting the problem is in: the certificate's or the key's.
                let (k, span) = match &err {
                    ClientCertError::Read {
                        what: "certificate",
                        ..
                    }
                    | ClientCertError::Certificate { .. } => (key("client_cert"), cert.span()),
                    _ => (key_key, key_span),
                };
                Err(self.invalid(&k, &span, err.to_string()))
            }
        }
    }

    /// IoT Hub's settings beyond the connection string: the X.509 certificate (which
    /// `x509=true` requires and a SAS key excludes) and the transport.
    pub(super) fn iot_hub_options(
        &mut self,
        prefix: &str,
        e: &RawEndpoint,
        table: &Range<usize>,
        connection_string: &str,
        spec: &mut IotHubSpec,
    ) -> Result<(), ConfigError> {
        let key = |k: &str| format!("{prefix}.{k}");
        spec.client_cert = self.client_cert(prefix, e, table, spec.tls)?;
        match (spec.x509, &spec.client_cert, &e.client_cert) {
            (true, None, _) => {
                return Err(ConfigError::new(
                    ErrorKind::Missing,
                    key("client_cert"),
                    "missing: x509=true needs client_cert and client_key (or client_key_env)",
                )
                .at(self.line(table)));
            }
            (false, Some(_), Some(c)) => {
                return Err(self.invalid(
                    &key("client_cert"),
                    &c.span(),
                    "the connection string has a SharedAccessKey; X.509 needs x509=true instead",
                ));
            }
            _ => {}
        }
        if let Some(t) = self.word(
            &key("transport"),
            &e.transport,
            IOT_HUB_TRANSPORT,
            "an IoT Hub transport",
        )? {
            spec.transport = t;
            if t == IotHubTransport::WebSockets && !connstr::iot_hub_names_port(connection_string) {
                spec.port = IOT_HUB_WEBSOCKET_PORT;
            }
        }
        Ok(())
    }
}

/// What is inconsistent about a spec's client certificate settings, however it was made
/// (TOML or code): (kind, setting, message). `None` when nothing is.
pub(crate) fn client_auth_problem(
    p: &ProtocolSpec,
) -> Option<(ErrorKind, &'static str, &'static str)> {
    match p {
        ProtocolSpec::IotHub(h) if h.x509 && h.client_cert.is_none() => Some((
            ErrorKind::Missing,
            "client_cert",
            "missing: x509=true needs client_cert and client_key (or client_key_env)",
        )),
        ProtocolSpec::IotHub(h) if !h.x509 && h.client_cert.is_some() => Some((
            ErrorKind::Invalid,
            "client_cert",
            "the connection string has a SharedAccessKey; X.509 needs x509=true instead",
        )),
        ProtocolSpec::IotHub(h) if h.x509 && !h.tls => Some((
            ErrorKind::Invalid,
            "connection_string",
            "x509=true needs TLS; it does not go with UseDevelopmentEmulator=true",
        )),
        ProtocolSpec::Mqtt(m) if m.client_cert.is_some() && !m.tls => Some((
            ErrorKind::Invalid,
            "client_cert",
            "a client certificate needs TLS (an mqtts:// url)",
        )),
        ProtocolSpec::Http(h)
            if h.client_cert.is_some() && !h.url.to_ascii_lowercase().starts_with("https://") =>
        {
            Some((
                ErrorKind::Invalid,
                "client_cert",
                "a client certificate needs TLS (an https:// url)",
            ))
        }
        _ => None,
    }
}
