//! The shared async scenarios (qmp-async-scenarios), run on async-std.

use futures::future::BoxFuture;
use qmp_async_scenarios::TestRuntime;
use std::future::Future;

#[derive(Clone, Copy)]
struct OnAsyncStd;

impl TestRuntime for OnAsyncStd {
    type Rt = qmp_async_std::AsyncStd;

    fn block_on<T>(self, future: impl Future<Output = T>) -> T {
        async_std::task::block_on(future)
    }

    fn spawn_task<T: Send + 'static>(
        self,
        future: impl Future<Output = T> + Send + 'static,
    ) -> BoxFuture<'static, T> {
        Box::pin(async_std::task::spawn(future))
    }
}

qmp_async_scenarios::scenarios!(OnAsyncStd);
