//! The process as a list of named duties (servers, leadership, heartbeat, controller, health
//! checks): each runs as its own task with its own stop signal, a duty that fails on its own stops
//! the process, and shutdown stops them one by one, the last started first, each within its grace.

use super::shutdown::Shutdown;
use std::future::Future;
use std::time::Duration;
use tokio::task::JoinHandle;

/// The duties started so far, in start order.
pub struct Duties {
    process: Shutdown,
    running: Vec<Running>,
}

struct Running {
    name: &'static str,
    stop: Shutdown,
    grace: Duration,
    task: JoinHandle<anyhow::Result<()>>,
}

impl Duties {
    /// `process` is triggered when a duty fails on its own (not while being stopped).
    pub fn new(process: Shutdown) -> Self {
        Self {
            process,
            running: Vec::new(),
        }
    }

    /// Starts `duty` with its stop signal, which it must obey by returning. When stopped, it gets
    /// `grace` to return; after that it is aborted (dropped wherever it is).
    pub fn start<F, Fut>(&mut self, name: &'static str, grace: Duration, duty: F)
    where
        F: FnOnce(Shutdown) -> Fut,
        Fut: Future<Output = anyhow::Result<()>> + Send + 'static,
    {
        let stop = Shutdown::new();
        let work = duty(stop.clone());
        let (process, stopping) = (self.process.clone(), stop.clone());
        let task = tokio::spawn(async move {
            let result = work.await;
            if let Err(e) = &result
                && !stopping.is_triggered()
            {
                tracing::error!(duty = name, error = format!("{e:#}"), "failed: stopping the process");
                process.trigger();
            }
            result
        });
        tracing::debug!(duty = name, "started");
        self.running.push(Running {
            name,
            stop,
            grace,
            task,
        });
    }

    /// Stops every duty, the last started first, each one after the one started after it has
    /// ended. The first error of any duty, with the duty's name.
    pub async fn stop(self) -> anyhow::Result<()> {
        self.end(false).await
    }

    /// Aborts every duty at once, the last started first (no grace: e.g. when another replica may
    /// already be leading, no in-flight write may land). The first error of a duty that had ended.
    pub async fn abort(self) -> anyhow::Result<()> {
        self.end(true).await
    }

    async fn end(self, now: bool) -> anyhow::Result<()> {
        let mut first_error = None;
        for Running {
            name,
            stop,
            grace,
            mut task,
        } in self.running.into_iter().rev()
        {
            stop.trigger();
            if now {
                task.abort();
            }
            let ended = match tokio::time::timeout(grace, &mut task).await {
                Ok(ended) => ended,
                Err(_) => {
                    tracing::warn!(duty = name, ?grace, "did not stop within its grace: aborted");
                    task.abort();
                    task.await
                }
            };
            let outcome = match ended {
                Ok(result) => result,
                Err(e) if e.is_cancelled() => Ok(()),
                Err(e) => Err(anyhow::anyhow!("the task panicked: {e}")),
            };
            match outcome {
                Ok(()) => tracing::debug!(duty = name, "stopped"),
                Err(e) => {
                    first_error.get_or_insert_with(|| e.context(name));
                }
            }
        }
        first_error.map_or(Ok(()), Err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    /// A duty that records when it stops, and fails when told to.
    fn recording(
        log: &Arc<Mutex<Vec<String>>>,
        name: &'static str,
        fail: bool,
    ) -> impl FnOnce(Shutdown) -> futures::future::BoxFuture<'static, anyhow::Result<()>> {
        let log = log.clone();
        move |stop| {
            Box::pin(async move {
                stop.wait().await;
                log.lock().unwrap().push(name.to_string());
                if fail { anyhow::bail!("{name} broke") } else { Ok(()) }
            })
        }
    }

    /// A duty that never obeys its stop signal.
    async fn stuck(_: Shutdown) -> anyhow::Result<()> {
        futures::future::pending::<()>().await;
        Ok(())
    }

    #[tokio::test]
    async fn duties_stop_in_reverse_order_and_the_first_error_is_named() {
        let log = Arc::new(Mutex::new(Vec::new()));
        let process = Shutdown::new();
        let mut duties = Duties::new(process.clone());
        duties.start("server", Duration::from_secs(1), recording(&log, "server", false));
        duties.start("lease", Duration::from_secs(1), recording(&log, "lease", true));
        duties.start(
            "controller",
            Duration::from_secs(1),
            recording(&log, "controller", false),
        );
        let err = duties.stop().await.unwrap_err();
        assert_eq!(*log.lock().unwrap(), ["controller", "lease", "server"]);
        assert_eq!(format!("{err:#}"), "lease: lease broke");
        assert!(
            !process.is_triggered(),
            "an error while stopping is not a failure of its own"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_duty_failing_on_its_own_stops_the_process_and_a_stuck_one_is_aborted() {
        let process = Shutdown::new();
        let mut duties = Duties::new(process.clone());
        duties.start("stuck", Duration::from_secs(3), stuck);
        duties.start("webhook", Duration::from_secs(1), |_| async {
            anyhow::bail!("port taken")
        });
        tokio::time::timeout(Duration::from_secs(1), process.wait())
            .await
            .expect("the failure stops the process");
        let started = tokio::time::Instant::now();
        let err = duties.stop().await.unwrap_err();
        assert_eq!(format!("{err:#}"), "webhook: port taken");
        assert_eq!(
            started.elapsed(),
            Duration::from_secs(3),
            "the stuck duty got its grace"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn abort_gives_no_grace_and_keeps_the_error_of_a_duty_that_ended() {
        let process = Shutdown::new();
        let mut duties = Duties::new(process.clone());
        duties.start("heartbeat", Duration::from_secs(5), stuck);
        duties.start("leader lease", Duration::from_secs(5), |_| async {
            anyhow::bail!("lost")
        });
        process.wait().await;
        let started = tokio::time::Instant::now();
        let err = duties.abort().await.unwrap_err();
        assert_eq!(started.elapsed(), Duration::ZERO);
        assert_eq!(format!("{err:#}"), "leader lease: lost");
    }
}
