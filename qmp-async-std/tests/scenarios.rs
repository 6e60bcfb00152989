//! The shared async scenarios (qmp-async-scenarios), run on async-std.

use futures::future::BoxFuture;
use qmp_async_scenarios::TestRuntime;
use qmp_async_std::{Client, Error, Options};
use std::any::Any;
use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

#[derive(Clone, Copy)]
struct AsyncStd;

impl TestRuntime for AsyncStd {
    fn block_on<T>(self, future: impl Future<Output = T>) -> T {
        async_std::task::block_on(future)
    }

    fn spawn<T: Send + 'static>(
        self,
        future: impl Future<Output = T> + Send + 'static,
    ) -> BoxFuture<'static, T> {
        Box::pin(async_std::task::spawn(future))
    }

    fn sleep(self, duration: Duration) -> BoxFuture<'static, ()> {
        Box::pin(async_std::task::sleep(duration))
    }

    fn runtime(self) -> std::sync::Arc<dyn qmp_async_std::Runtime> {
        std::sync::Arc::new(qmp_async_std::AsyncStd)
    }

    fn connect_unix(
        self,
        path: &Path,
        options: Options,
    ) -> BoxFuture<'static, Result<Client, Error>> {
        Box::pin(qmp_async_std::connect_unix(path.to_owned(), options))
    }

    fn connect_tcp(
        self,
        addr: SocketAddr,
        options: Options,
    ) -> BoxFuture<'static, Result<Client, Error>> {
        Box::pin(qmp_async_std::connect_tcp(addr, options))
    }

    fn accept_unix(
        self,
        listener: std::os::unix::net::UnixListener,
        options: Options,
    ) -> BoxFuture<'static, Result<Client, Error>> {
        Box::pin(async move {
            let listener = async_std::os::unix::net::UnixListener::from(listener);
            qmp_async_std::accept_unix(&listener, options).await
        })
    }

    fn spawn_stdio(
        self,
        command: std::process::Command,
        options: Options,
    ) -> BoxFuture<'static, Result<(Client, Box<dyn Any + Send>), Error>> {
        Box::pin(async move {
            let (client, child) = qmp_async_std::spawn_stdio(command, options).await?;
            Ok((client, Box::new(child) as Box<dyn Any + Send>))
        })
    }
}

qmp_async_scenarios::scenarios!(AsyncStd);
