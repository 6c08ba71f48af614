//! The report thread: the admin's heavy reads (a scrape, quality scores, Top-N, latency,
//! traffic, transactions) are built on one thread of their own at the lowest CPU
//! priority. On a machine whose cores the workers keep busy, a 1,000-route scrape
//! (about 20 ms of CPU) then runs in the gaps the workers leave instead of taking their
//! core for 20 ms at a time, which is what pushed the proxied p99 up under a scrape.
//! With a free core it runs at full speed, as before. One thread also bounds what
//! scrapers can take: reports queue, at most [`QUEUE`] of them; beyond that the admin
//! answers 503.

use std::sync::OnceLock;
use std::sync::mpsc::{SyncSender, TrySendError, sync_channel};

/// Reports waiting for the thread before the admin answers 503.
pub const QUEUE: usize = 32;

/// The niceness of the report thread: the lowest priority an unprivileged process can
/// give (Linux's range is -20..19).
#[cfg(target_os = "linux")]
const NICENESS: i32 = 19;

type Job = Box<dyn FnOnce() + Send>;

/// Why a report was not built.
#[derive(Debug, PartialEq, Eq)]
pub enum Refused {
    /// [`QUEUE`] reports were already waiting.
    Busy,
    /// The report panicked or the thread could not start; nothing was built.
    Failed,
}

/// Builds `make` on the report thread and hands back what it returns.
pub async fn build<T, F>(make: F) -> Result<T, Refused>
where
    T: Send + 'static,
    F: FnOnce() -> T + Send + 'static,
{
    let Some(jobs) = jobs() else {
        return Err(Refused::Failed);
    };
    let (tx, rx) = tokio::sync::oneshot::channel();
    let job: Job = Box::new(move || {
        // A panicking report loses its answer (the caller sees `Failed`), not the thread.
        if let Ok(v) = std::panic::catch_unwind(std::panic::AssertUnwindSafe(make)) {
            let _ = tx.send(v);
        }
    });
    match jobs.try_send(job) {
        Ok(()) => rx.await.map_err(|_| Refused::Failed),
        Err(TrySendError::Full(_)) => Err(Refused::Busy),
        Err(TrySendError::Disconnected(_)) => Err(Refused::Failed),
    }
}

/// The thread's queue, started on first use; `None` if the thread could not start.
fn jobs() -> Option<&'static SyncSender<Job>> {
    static JOBS: OnceLock<Option<SyncSender<Job>>> = OnceLock::new();
    JOBS.get_or_init(|| {
        let (tx, rx) = sync_channel::<Job>(QUEUE);
        std::thread::Builder::new()
            .name("gatehouse-report".into())
            .spawn(move || {
                lower_priority();
                for job in rx {
                    job();
                }
            })
            .ok()
            .map(|_| tx)
    })
    .as_ref()
}

/// Gives the calling thread (only it: Linux keeps a niceness per thread) the lowest
/// priority. A refusal is logged and the reports run at normal priority.
fn lower_priority() {
    #[cfg(target_os = "linux")]
    if let Err(error) =
        rustix::process::setpriority_process(Some(rustix::thread::gettid()), NICENESS)
    {
        tracing::warn!(
            %error,
            "could not lower the admin report thread's priority; scrapes compete with the workers"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn reports_come_back_and_a_panic_spares_the_thread() {
        assert_eq!(build(|| 6 * 7).await, Ok(42));
        let failed: Result<(), Refused> = build(|| panic!("a broken report")).await;
        assert_eq!(failed, Err(Refused::Failed));
        assert_eq!(build(|| "still here").await, Ok("still here"));
    }

    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn the_thread_runs_at_the_lowest_priority() {
        let nice =
            build(|| rustix::process::getpriority_process(Some(rustix::thread::gettid())).ok())
                .await;
        assert_eq!(nice, Ok(Some(NICENESS)));
    }

    #[tokio::test]
    async fn a_full_queue_is_refused_not_waited_on() {
        // Hold the thread, fill the queue, then one more is refused at once.
        let (release, hold) = std::sync::mpsc::channel::<()>();
        let holding = tokio::spawn(build(move || {
            let _ = hold.recv();
        }));
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        let queued: Vec<_> = (0..QUEUE).map(|i| tokio::spawn(build(move || i))).collect();
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        assert_eq!(build(|| 0).await, Err(Refused::Busy));
        release.send(()).unwrap();
        holding.await.unwrap().unwrap();
        for (i, q) in queued.into_iter().enumerate() {
            assert_eq!(q.await.unwrap(), Ok(i));
        }
    }
}
