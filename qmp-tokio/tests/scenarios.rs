//! The shared async scenarios (qmp-async-scenarios), run on tokio: once on a multi-thread
//! runtime, once on a current-thread runtime.

use futures::future::BoxFuture;
use qmp_async_scenarios::TestRuntime;
use std::future::Future;

/// tokio, with a new runtime of the given flavour for every `block_on`.
#[derive(Clone, Copy)]
struct OnTokio {
    multi_thread: bool,
}

impl TestRuntime for OnTokio {
    type Rt = qmp_tokio::Tokio;

    fn block_on<T>(self, future: impl Future<Output = T>) -> T {
        let mut builder = if self.multi_thread {
            tokio::runtime::Builder::new_multi_thread()
        } else {
            tokio::runtime::Builder::new_current_thread()
        };
        let runtime = builder.enable_all().build().expect("tokio runtime");
        runtime.block_on(future)
    }

    fn spawn_task<T: Send + 'static>(
        self,
        future: impl Future<Output = T> + Send + 'static,
    ) -> BoxFuture<'static, T> {
        let task = tokio::spawn(future);
        Box::pin(async move {
            match task.await {
                Ok(value) => value,
                Err(e) => std::panic::resume_unwind(e.into_panic()),
            }
        })
    }
}

mod multi_thread {
    qmp_async_scenarios::scenarios!(super::OnTokio { multi_thread: true });
}

mod current_thread {
    qmp_async_scenarios::scenarios!(super::OnTokio {
        multi_thread: false
    });
}
