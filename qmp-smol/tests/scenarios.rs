//! The shared async scenarios (qmp-async-scenarios), run on smol.

use futures::future::BoxFuture;
use qmp_async_scenarios::TestRuntime;
use qmp_smol::{Client, Error, Options};
use std::any::Any;
use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

#[derive(Clone, Copy)]
struct Smol;

impl TestRuntime for Smol {
    fn block_on<T>(self, future: impl Future<Output = T>) -> T {
        smol::block_on(future)
    }

    fn spawn<T: Send + 'static>(
        self,
        future: impl Future<Output = T> + Send + 'static,
    ) -> BoxFuture<'static, T> {
        Box::pin(smol::spawn(future))
    }

    fn sleep(self, duration: Duration) -> BoxFuture<'static, ()> {
        Box::pin(async move {
            smol::Timer::after(duration).await;
        })
    }

    fn runtime(self) -> std::sync::Arc<dyn qmp_smol::Runtime> {
        std::sync::Arc::new(qmp_smol::Smol)
    }

    fn connect_unix(
        self,
        path: &Path,
        options: Options,
    ) -> BoxFuture<'static, Result<Client, Error>> {
        Box::pin(qmp_smol::connect_unix(path.to_owned(), options))
    }

    fn connect_tcp(
        self,
        addr: SocketAddr,
        options: Options,
    ) -> BoxFuture<'static, Result<Client, Error>> {
        Box::pin(qmp_smol::connect_tcp(addr, options))
    }

    fn accept_unix(
        self,
        listener: std::os::unix::net::UnixListener,
        options: Options,
    ) -> BoxFuture<'static, Result<Client, Error>> {
        Box::pin(async move {
            let listener = smol::Async::new(listener)?;
            qmp_smol::accept_unix(&listener, options).await
        })
    }

    fn spawn_stdio(
        self,
        command: std::process::Command,
        options: Options,
    ) -> BoxFuture<'static, Result<(Client, Box<dyn Any + Send>), Error>> {
        Box::pin(async move {
            let (client, child) = qmp_smol::spawn_stdio(command, options).await?;
            Ok((client, Box::new(child) as Box<dyn Any + Send>))
        })
    }
}

qmp_async_scenarios::scenarios!(Smol);
