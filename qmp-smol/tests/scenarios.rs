//! The shared async scenarios (qmp-async-scenarios), run on smol.

use futures::future::BoxFuture;
use qmp_async_scenarios::TestRuntime;
use std::future::Future;

#[derive(Clone, Copy)]
struct OnSmol;

impl TestRuntime for OnSmol {
    type Rt = qmp_smol::Smol;

    fn block_on<T>(self, future: impl Future<Output = T>) -> T {
        smol::block_on(future)
    }

    fn spawn_task<T: Send + 'static>(
        self,
        future: impl Future<Output = T> + Send + 'static,
    ) -> BoxFuture<'static, T> {
        Box::pin(smol::spawn(future))
    }
}

qmp_async_scenarios::scenarios!(OnSmol);
