//! The shared async scenarios (qmp-async-scenarios), run on tokio: once on a multi-thread
//! runtime, once on a current-thread runtime.

use futures::future::BoxFuture;
use qmp_async_scenarios::TestRuntime;
use qmp_tokio::{Client, Error, Options};
use std::any::Any;
use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

/// tokio, with a new runtime of the given flavour for every `block_on`.
#[derive(Clone, Copy)]
struct Tokio {
    multi_thread: bool,
}

impl TestRuntime for Tokio {
    fn block_on<T>(self, future: impl Future<Output = T>) -> T {
        let mut builder = if self.multi_thread {
            tokio::runtime::Builder::new_multi_thread()
        } else {
            tokio::runtime::Builder::new_current_thread()
        };
        let runtime = builder.enable_all().build().expect("tokio runtime");
        runtime.block_on(future)
    }

    fn spawn<T: Send + 'static>(
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

    fn sleep(self, duration: Duration) -> BoxFuture<'static, ()> {
        Box::pin(tokio::time::sleep(duration))
    }

    fn runtime(self) -> std::sync::Arc<dyn qmp_tokio::Runtime> {
        std::sync::Arc::new(qmp_tokio::Tokio::try_current().expect("called inside block_on"))
    }

    fn connect_unix(
        self,
        path: &Path,
        options: Options,
    ) -> BoxFuture<'static, Result<Client, Error>> {
        Box::pin(qmp_tokio::connect_unix(path.to_owned(), options))
    }

    fn connect_tcp(
        self,
        addr: SocketAddr,
        options: Options,
    ) -> BoxFuture<'static, Result<Client, Error>> {
        Box::pin(qmp_tokio::connect_tcp(addr, options))
    }

    fn accept_unix(
        self,
        listener: std::os::unix::net::UnixListener,
        options: Options,
    ) -> BoxFuture<'static, Result<Client, Error>> {
        Box::pin(async move {
            listener.set_nonblocking(true)?;
            let listener = tokio::net::UnixListener::from_std(listener)?;
            qmp_tokio::accept_unix(&listener, options).await
        })
    }

    fn spawn_stdio(
        self,
        command: std::process::Command,
        options: Options,
    ) -> BoxFuture<'static, Result<(Client, Box<dyn Any + Send>), Error>> {
        Box::pin(async move {
            let (client, child) = qmp_tokio::spawn_stdio(command, options).await?;
            Ok((client, Box::new(child) as Box<dyn Any + Send>))
        })
    }
}

mod multi_thread {
    qmp_async_scenarios::scenarios!(super::Tokio { multi_thread: true });
}

mod current_thread {
    qmp_async_scenarios::scenarios!(super::Tokio {
        multi_thread: false
    });
}
