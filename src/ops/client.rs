//! nsguard's Kubernetes client: kube's own, with Nagle's algorithm off on its connections.
//!
//! kube-client 5 builds its connector with hyper-util's default, `TCP_NODELAY` off (kube-rs issue
//! #2056). On each new connection to the API server the last message of the TLS handshake and the
//! first request then go as two small segments, and the request waits for the API server's delayed
//! ACK of the first: 40 ms on Linux. In the 10,000-namespace bench, runs with an idle spell before
//! the drift mostly had one heal of 44–53 ms where the rest took 3: the heal overlapped a status
//! write after the idle spell had closed the pool's spare connections, so it went on a new one.
//! client-go, like every Go program, has `TCP_NODELAY` on.
//!
//! The stack is kube's own, from its public parts, in kube's order: the rustls connector (with the
//! config's CA, server name and client certificate, an exec plugin's too) and the timeouts from the
//! [`Config`], then [`ConfigExt`]'s base URI, kube's retry policy (if the config asks for it), its
//! auth (tokens refreshed as kube refreshes them) and extra headers (impersonation). A config with
//! a proxy gets kube's builder as it is. Not here: kube's `HTTP` tracing spans, and with them its
//! error log line for each failed request; nsguard logs its own failures, with what failed.
//! (kube's gzip decompression is not built into nsguard either way.)

use hyper_timeout::TimeoutConnector;
use hyper_util::client::legacy::Builder;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use kube::client::retry::RetryPolicy;
use kube::client::{Body, ConfigExt};
use kube::{Client, Config};
use tower::retry::RetryLayer;
use tower::{BoxError, ServiceBuilder};

/// A client for `config`, its connections with `TCP_NODELAY` on (kube's builder, as it is, for a
/// proxy).
pub fn build(config: Config) -> kube::Result<Client> {
    if config.proxy_url.is_some() {
        return Client::try_from(config);
    }
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_nodelay(true);
    let mut connector = TimeoutConnector::new(config.rustls_https_connector_with_connector(http)?);
    connector.set_connect_timeout(config.connect_timeout);
    connector.set_read_timeout(config.read_timeout);
    connector.set_write_timeout(config.write_timeout);
    connector.set_reset_reader_on_write(config.reset_reader_on_write);
    let http = Builder::new(TokioExecutor::new()).build::<_, Body>(connector);
    let service = ServiceBuilder::new()
        .layer(config.base_uri_layer())
        .option_layer(config.default_retry.then(|| RetryLayer::new(RetryPolicy::server_retry())))
        .option_layer(config.auth_layer()?)
        .layer(config.extra_headers_layer()?)
        .map_err(BoxError::from)
        .service(http);
    Ok(Client::new(service, config.default_namespace))
}
