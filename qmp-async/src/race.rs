//! The first of two futures to finish: the one combinator the engine needs (a call against its
//! timeout, a connect against its limit), written here so that the clients depend on
//! futures-core and futures-io only, not on futures-util and the `futures` facade.

use std::future::Future;
use std::pin::pin;
use std::task::Poll;

/// Which of the two futures given to [`select`] finished first, with its output.
pub(crate) enum Either<L, R> {
    /// The first one.
    Left(L),
    /// The second one.
    Right(R),
}

/// Runs `left` and `right` together and returns the output of the first to finish; the other is
/// dropped. When both are ready in the same poll, `left` wins (it is polled first).
pub(crate) async fn select<L: Future, R: Future>(
    left: L,
    right: R,
) -> Either<L::Output, R::Output> {
    let mut left = pin!(left);
    let mut right = pin!(right);
    std::future::poll_fn(|cx| {
        if let Poll::Ready(out) = left.as_mut().poll(cx) {
            return Poll::Ready(Either::Left(out));
        }
        if let Poll::Ready(out) = right.as_mut().poll(cx) {
            return Poll::Ready(Either::Right(out));
        }
        Poll::Pending
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::future::{pending, ready};

    fn run<F: Future>(f: F) -> F::Output {
        futures::executor::block_on(f)
    }

    #[test]
    fn the_ready_one_wins_and_left_wins_a_tie() {
        assert!(matches!(
            run(select(ready(1), pending::<()>())),
            Either::Left(1)
        ));
        assert!(matches!(
            run(select(pending::<()>(), ready(2))),
            Either::Right(2)
        ));
        assert!(matches!(run(select(ready(1), ready(2))), Either::Left(1)));
    }
}
