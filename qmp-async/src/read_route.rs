//! The connection's one read waker, and who it routes to: the read role.
//!
//! Every read of the socket is made with the same waker, [`ReadRoute::waker`], so the reactor
//! holds exactly one read registration per connection and never trades it between tasks (async-io
//! wakes the waker it replaces: two wakers taking turns would wake each other). When the reactor
//! fires it, it wakes whoever holds the read role:
//!
//! - a waiting [`Call`](crate::Call): the last one polled while its reply had not come. Polled,
//!   it reads, feeds the session and routes what came (its own reply, others', events) itself, so
//!   a reply costs no wake of the driver task;
//! - the driver, when no call waits, so the socket is never left unread (rule 10).
//!
//! When the holding call completes or is dropped, the role passes to another waiting call or back
//! to the driver. A task that waits for an event (an `EventStream`, `events()`, `next_event`,
//! `wait_event`) gives the role back to the driver too, so events flow even while the call that
//! held the role is kept aside unpolled. If the registration is still armed (the last read found nothing and the reactor
//! has not fired since), passing it costs nothing: the next readiness wakes the new holder.
//! Otherwise the new holder is woken to read.

use qmp_proto::CommandId;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Wake, Waker};

/// The waker the reactor holds; it wakes the holder's task.
struct Router {
    /// The holder's waker.
    target: Mutex<Option<Waker>>,
    /// How many times the reactor fired it: a read registration made before the last firing is
    /// spent.
    fired: AtomicU64,
}

impl Wake for Router {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.fired.fetch_add(1, Ordering::SeqCst);
        let target = self
            .target
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        if let Some(w) = target {
            w.wake();
        }
    }
}

/// Who reads: the read role, and the one waker every read is made with.
pub(crate) struct ReadRoute {
    router: Arc<Router>,
    waker: Waker,
    /// The call holding the role; `None`: the driver.
    holder: Option<CommandId>,
    /// The driver's waker, kept for when the role comes back to it.
    driver: Option<Waker>,
    /// The firing count when a read last found nothing (registering [`Self::waker`]): the
    /// registration is armed while the count has not moved.
    armed_at: Option<u64>,
}

impl ReadRoute {
    pub(crate) fn new() -> Self {
        let router = Arc::new(Router {
            target: Mutex::new(None),
            fired: AtomicU64::new(0),
        });
        ReadRoute {
            waker: Waker::from(router.clone()),
            router,
            holder: None,
            driver: None,
            armed_at: None,
        }
    }

    /// The waker to read with.
    pub(crate) fn waker(&self) -> &Waker {
        &self.waker
    }

    /// The firing count now: pass it to [`Self::read_pending`] if the read that follows finds
    /// nothing.
    pub(crate) fn fired(&self) -> u64 {
        self.router.fired.load(Ordering::SeqCst)
    }

    /// A read made after [`Self::fired`] returned `at` found nothing: the waker is registered.
    pub(crate) fn read_pending(&mut self, at: u64) {
        self.armed_at = Some(at);
    }

    /// Whether a readiness is still to come: reading now would find nothing.
    pub(crate) fn armed(&self) -> bool {
        self.armed_at == Some(self.fired())
    }

    /// The driver was polled with `waker`; it is woken through the route while it holds the role.
    pub(crate) fn driver_polled(&mut self, waker: &Waker) {
        if !self.driver.as_ref().is_some_and(|w| w.will_wake(waker)) {
            self.driver = Some(waker.clone());
        }
        if self.holder.is_none() {
            self.set_target(waker);
        }
    }

    /// The call `id` waits, polled with `waker`: it takes the role.
    pub(crate) fn take(&mut self, id: CommandId, waker: &Waker) {
        self.holder = Some(id);
        self.set_target(waker);
    }

    /// Whether the call `id` holds the role.
    pub(crate) fn holds(&self, id: CommandId) -> bool {
        self.holder == Some(id)
    }

    /// The call `id` is done or gone: if it held the role, it passes to `next` (a call still
    /// waiting, with its waker) or else to the driver. Returns the waker to wake if the new
    /// holder must read now (the registration is spent).
    pub(crate) fn release(
        &mut self,
        id: CommandId,
        next: Option<(CommandId, Waker)>,
    ) -> Option<Waker> {
        if self.holder != Some(id) {
            return None;
        }
        let waker = match next {
            Some((next, waker)) => {
                self.holder = Some(next);
                Some(waker)
            }
            None => {
                self.holder = None;
                self.driver.clone()
            }
        };
        if let Some(w) = &waker {
            self.set_target(w);
        }
        if self.armed() {
            None
        } else {
            waker
        }
    }

    /// Someone waits for an event: the role goes back to the driver (it routes events; a call
    /// holding the role might not be polled again while its task waits for that event). Returns
    /// the driver's waker if it must read now (the registration is spent).
    pub(crate) fn hand_to_driver(&mut self) -> Option<Waker> {
        self.holder.take()?;
        let driver = self.driver.clone()?;
        self.set_target(&driver);
        if self.armed() {
            None
        } else {
            Some(driver)
        }
    }

    fn set_target(&self, waker: &Waker) {
        let mut target = self.router.target.lock().unwrap_or_else(|e| e.into_inner());
        if !target.as_ref().is_some_and(|w| w.will_wake(waker)) {
            *target = Some(waker.clone());
        }
    }
}
