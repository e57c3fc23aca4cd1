//! The application: shared state, the listener, and graceful shutdown.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::access::keys::KeyStore;
use crate::access::Access;
use crate::audit::AuditLog;
use crate::cache::generations::Generations;
use crate::cache::ResultCache;
use crate::catalog::{Catalog, CatalogHandle};
use crate::config::Settings;
use crate::ingest::{Pipeline, Workers};
use crate::storage::clickhouse::ClickHouse;
use crate::storage::postgres::Postgres;
use crate::storage::redis::Redis;

/// Everything a handler needs, shared: axum clones the state for every handler and middleware of
/// every request, so a clone is one reference count.
#[derive(Clone)]
pub struct AppState(Arc<SharedState>);

impl std::ops::Deref for AppState {
    type Target = SharedState;

    fn deref(&self) -> &SharedState {
        &self.0
    }
}

/// The fields of [`AppState`].
pub struct SharedState {
    /// Settings the application was built with.
    pub settings: Arc<Settings>,
    /// The analytics database.
    pub clickhouse: ClickHouse,
    /// Keys, business-critical events, audit log, scheduler state.
    pub postgres: Postgres,
    /// Optional shared cache and limits.
    pub redis: Option<Redis>,
    /// API key authentication.
    pub keys: KeyStore,
    /// Event ingestion.
    pub pipeline: Pipeline,
    /// Query templates, swapped atomically on reload.
    pub catalog: CatalogHandle,
    /// Roles, policies, row filters and JWT verification.
    pub access: Access,
    /// Template results, in Redis and in process.
    pub cache: ResultCache,
    /// Who did what, when, from where and why.
    pub audit: AuditLog,
    /// ClickHouse's HTTP interface, for the BI endpoint's pass-through.
    pub upstream: crate::bi::Upstream,
    /// Cron schedules of alerts, reports and segments, and their runs.
    pub scheduler: crate::schedule::Scheduler,
    /// Outgoing HTTP: alert channels, report and export webhooks.
    pub outbound: reqwest::Client,
    /// Memory all request bodies read whole and buffered results may take together.
    pub buffers: crate::http::body::MemoryBudget,
    /// Runs templates for principals: every consumer's one path.
    pub runner: crate::query::runner::Runner,
    /// What stored, scheduled definitions (alerts, reports, segments) use.
    pub definitions: crate::definitions::Context,
}

/// The part of the state each group of handlers uses: handlers and the code below them take
/// these, never `AppState`.
macro_rules! sub_state {
    ($($state:ty => |$s:ident| $make:expr;)*) => {
        $(
            impl axum::extract::FromRef<AppState> for $state {
                fn from_ref($s: &AppState) -> Self {
                    $make
                }
            }
        )*
    };
}

sub_state! {
    crate::definitions::Context => |s| s.definitions.clone();
    crate::query::runner::Runner => |s| s.runner.clone();
    crate::access::auth::Authenticator => |s| crate::access::auth::Authenticator {
        keys: s.keys.clone(),
        access: s.access.clone(),
        audit: s.audit.clone(),
    };
    crate::access::admin::Admin => |s| crate::access::admin::Admin {
        keys: s.keys.clone(),
        audit: s.audit.clone(),
        postgres: s.postgres.clone(),
    };
    crate::ingest::http::Intake => |s| crate::ingest::http::Intake {
        pipeline: s.pipeline.clone(),
        access: s.access.clone(),
        buffers: s.buffers.clone(),
    };
    crate::bi::Endpoint => |s| crate::bi::Endpoint {
        auth: axum::extract::FromRef::from_ref(s),
        access: s.access.clone(),
        audit: s.audit.clone(),
        buffers: s.buffers.clone(),
        cache: s.cache.clone(),
        clickhouse: s.clickhouse.clone(),
        upstream: s.upstream.clone(),
        settings: s.settings.clone(),
    };
    crate::http::health::Dependencies => |s| crate::http::health::Dependencies {
        clickhouse: s.clickhouse.clone(),
        postgres: s.postgres.clone(),
        redis: s.redis.clone(),
    };
}

impl AppState {
    /// Builds the state and starts the ingestion workers (on the current runtime).
    pub fn new(settings: Settings) -> anyhow::Result<(Self, Workers)> {
        let postgres = Postgres::connect_lazy(&settings.postgres)?;
        let redis = Redis::from_settings(&settings.redis)?;
        let catalog =
            Catalog::load_or_explain(&settings.catalog.dir, &settings.clickhouse.database)?;
        let catalog = CatalogHandle::new(catalog, &settings.clickhouse.database);
        let access = Access::load(&settings.access, redis.clone())?;
        let clickhouse = ClickHouse::new(&settings.clickhouse);
        let generations = Generations::new(
            redis.clone(),
            clickhouse.database(),
            std::time::Duration::from_millis(settings.cache.generation_memo_ms),
        );
        let (pipeline, workers) = Pipeline::start(
            &settings,
            clickhouse.client().clone(),
            postgres.pool().clone(),
            generations.clone(),
        )?;
        let cache = ResultCache::new(&settings.cache, redis.clone(), generations);
        let audit = AuditLog::start(
            postgres.pool().clone(),
            settings.audit.retention_days,
            CancellationToken::new(),
        );
        let upstream = crate::bi::Upstream::new(&settings.clickhouse)?;
        let outbound = reqwest::Client::builder()
            .connect_timeout(std::time::Duration::from_secs(5))
            .user_agent(concat!("chgate/", env!("CARGO_PKG_VERSION")))
            .build()?;
        let buffers = crate::http::body::MemoryBudget::new(
            settings.server.max_buffered_bytes,
            std::time::Duration::from_millis(settings.server.buffered_wait_ms),
        );
        let runner = crate::query::runner::Runner {
            catalog: catalog.clone(),
            access: access.clone(),
            cache: cache.clone(),
            clickhouse: clickhouse.clone(),
            buffers: buffers.clone(),
            audit: audit.clone(),
            pii_salt: Arc::from(settings.privacy.salt.expose()),
        };
        let scheduler = crate::schedule::Scheduler::new(postgres.pool().clone());
        let settings = Arc::new(settings);
        let definitions = crate::definitions::Context {
            pool: postgres.pool().clone(),
            runner: runner.clone(),
            access: access.clone(),
            clickhouse: clickhouse.clone(),
            scheduler: scheduler.clone(),
            outbound: outbound.clone(),
            audit: audit.clone(),
            settings: settings.clone(),
        };
        let state = SharedState {
            definitions,
            runner,
            buffers,
            scheduler,
            outbound,
            upstream,
            cache,
            audit,
            clickhouse,
            keys: KeyStore::new(postgres.pool().clone()),
            postgres,
            redis,
            pipeline,
            catalog,
            access,
            settings,
        };
        Ok((Self(Arc::new(state)), workers))
    }
}

/// A bound, not yet running, gateway.
pub struct Application {
    listener: TcpListener,
    /// The BI endpoint's listener, when enabled.
    bi_listener: Option<TcpListener>,
    state: AppState,
    workers: Workers,
    shutdown: CancellationToken,
}

impl Application {
    /// Binds the listener (port 0 picks a free port) and builds the state; connects lazily, so it
    /// succeeds while dependencies are down.
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        crate::http::metrics::handle();
        let listener = TcpListener::bind(settings.server.listen)
            .await
            .with_context(|| format!("cannot listen on {}", settings.server.listen))?;
        let bi_listener = if settings.bi.enabled {
            Some(
                TcpListener::bind(settings.bi.listen)
                    .await
                    .with_context(|| {
                        format!("cannot listen on {} (bi.listen)", settings.bi.listen)
                    })?,
            )
        } else {
            None
        };
        if settings.ingest.wal == crate::config::WalMode::Off {
            tracing::warn!("ingest.wal is off: acknowledged events not yet in ClickHouse are lost if the gateway crashes");
        }
        let (state, workers) = AppState::new(settings)?;
        let shutdown = CancellationToken::new();
        let poll = state.settings.catalog.reload_poll_ms;
        if poll > 0 {
            state
                .catalog
                .watch(std::time::Duration::from_millis(poll), shutdown.clone());
        }
        let poll = state.settings.access.reload_poll_ms;
        if poll > 0 {
            state
                .access
                .watch(std::time::Duration::from_millis(poll), shutdown.clone());
        }
        Ok(Self {
            listener,
            bi_listener,
            state,
            workers,
            shutdown,
        })
    }

    pub fn local_addr(&self) -> anyhow::Result<SocketAddr> {
        Ok(self.listener.local_addr()?)
    }

    /// Address of the BI endpoint, when enabled.
    pub fn bi_addr(&self) -> Option<SocketAddr> {
        self.bi_listener.as_ref().and_then(|l| l.local_addr().ok())
    }

    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// A token that stops the application when cancelled (as SIGTERM does).
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    /// Serves until the shutdown token is cancelled, then stops accepting connections, drains
    /// in-flight requests and flushes pending writes, each for at most `server.shutdown_timeout_secs`.
    pub async fn run_until_stopped(self) -> anyhow::Result<()> {
        let drain_for = self.state.settings.server.shutdown_timeout();
        let shutdown = self.shutdown.clone();
        let router = crate::http::router(self.state.clone());
        let server = axum::serve(
            self.listener,
            router.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .with_graceful_shutdown(shutdown.clone().cancelled_owned());
        if self.state.settings.scheduler.enabled {
            let settings = &self.state.settings.scheduler;
            crate::schedule::spawn(
                self.state.scheduler.clone(),
                crate::definitions::jobs::Jobs::new(self.state.definitions.clone()),
                std::time::Duration::from_millis(settings.tick_ms.max(50)),
                settings.parallel,
                shutdown.clone(),
            );
        }
        let rollups = &self.state.settings.rollups;
        if rollups.finalize_secs > 0 {
            crate::rollups::spawn(
                self.state.clickhouse.clone(),
                std::time::Duration::from_secs(rollups.finalize_secs),
                rollups.finalize_days,
                shutdown.clone(),
            );
        }
        if let Some(listener) = self.bi_listener {
            let bi = axum::serve(
                listener,
                crate::bi::router(axum::extract::FromRef::from_ref(&self.state))
                    .into_make_service_with_connect_info::<SocketAddr>(),
            )
            .with_graceful_shutdown(shutdown.clone().cancelled_owned());
            tokio::spawn(async move {
                if let Err(e) = bi.await {
                    tracing::error!(error = %e, "the BI listener failed");
                }
            });
        }
        let mut server = std::pin::pin!(std::future::IntoFuture::into_future(server));
        tokio::select! {
            result = &mut server => result.context("server failed")?,
            () = shutdown.cancelled() => {
                tracing::info!(drain_secs = drain_for.as_secs(), "shutting down: draining in-flight requests");
                if tokio::time::timeout(drain_for, &mut server).await.is_err() {
                    tracing::warn!("in-flight requests did not finish in time; closing them");
                }
            }
        }
        self.workers.shutdown(drain_for).await;
        tracing::info!("stopped");
        Ok(())
    }
}

/// Cancels `token` on SIGTERM or SIGINT.
pub fn cancel_on_signal(token: CancellationToken) {
    tokio::spawn(async move {
        let ctrl_c = tokio::signal::ctrl_c();
        #[cfg(unix)]
        {
            let mut term =
                match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                    Ok(term) => term,
                    Err(err) => {
                        tracing::error!(error = %err, "cannot install the SIGTERM handler");
                        let _ = ctrl_c.await;
                        token.cancel();
                        return;
                    }
                };
            tokio::select! {
                _ = ctrl_c => tracing::info!("SIGINT received"),
                _ = term.recv() => tracing::info!("SIGTERM received"),
            }
        }
        #[cfg(not(unix))]
        {
            let _ = ctrl_c.await;
        }
        token.cancel();
    });
}
