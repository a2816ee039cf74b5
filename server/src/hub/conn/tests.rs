//! The outbox's bounds and close orders, reader wake-ups, room lists.

use super::*;
use std::task::Waker;

fn conn() -> Conn {
    Conn::new(1, "u".into(), None, 0)
}

#[test]
fn overflow_closes_as_slow_consumer_and_frees_the_queue() {
    let c = conn();
    let limits = QueueLimits {
        max_frames: 2,
        max_bytes: 100,
    };
    let close = Bytes::from_static(b"close");
    c.enqueue(Bytes::from_static(b"a"), &limits, &close)
        .unwrap();
    c.enqueue(Bytes::from_static(b"b"), &limits, &close)
        .unwrap();
    assert_eq!(
        c.enqueue(Bytes::from_static(b"c"), &limits, &close),
        Err(EnqueueError::SlowConsumer)
    );
    assert_eq!(c.queued(), (0, 0));
    assert_eq!(
        c.enqueue(Bytes::from_static(b"d"), &limits, &close),
        Err(EnqueueError::Closed)
    );
    let mut cx = Context::from_waker(Waker::noop());
    let mut batch = thin_vec::ThinVec::new();
    match c.poll_output(&mut cx, &mut batch, 10) {
        Poll::Ready(Output::Close(o)) => assert_eq!(o.code, ErrorCode::SLOW_CONSUMER),
        other => panic!("{other:?}"),
    }
}

#[test]
fn byte_limit_applies() {
    let c = conn();
    let limits = QueueLimits {
        max_frames: 100,
        max_bytes: 3,
    };
    let close = Bytes::new();
    c.enqueue(Bytes::from_static(b"abc"), &limits, &close)
        .unwrap();
    assert!(c
        .enqueue(Bytes::from_static(b"d"), &limits, &close)
        .is_err());
}

#[test]
fn close_waits_for_queued_frames() {
    let c = conn();
    let limits = QueueLimits {
        max_frames: 10,
        max_bytes: 100,
    };
    c.enqueue(Bytes::from_static(b"a"), &limits, &Bytes::new())
        .unwrap();
    c.close(
        CloseOrder {
            code: ErrorCode::SHUTTING_DOWN,
            frame: Bytes::new(),
        },
        false,
    );
    let mut cx = Context::from_waker(Waker::noop());
    let mut batch = thin_vec::ThinVec::new();
    assert!(matches!(
        c.poll_output(&mut cx, &mut batch, 10),
        Poll::Ready(Output::Frames)
    ));
    assert_eq!(batch.len(), 1);
    batch.clear();
    assert!(matches!(
        c.poll_output(&mut cx, &mut batch, 10),
        Poll::Ready(Output::Close(_))
    ));
}

#[test]
fn a_reader_waiting_for_credit_is_woken_when_the_engine_catches_up() {
    use std::sync::atomic::AtomicUsize;
    use std::task::Wake;
    struct Count(AtomicUsize);
    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }
    let c = conn();
    let count = Arc::new(Count(AtomicUsize::new(0)));
    let waker = Waker::from(count.clone());
    let mut cx = Context::from_waker(&waker);
    c.begin_request();
    c.begin_request();
    assert!(!c.must_wait_for_engine(3));
    assert!(c.must_wait_for_engine(2));
    // The task parks on its outbox, which registers the waker.
    assert!(c
        .poll_output(&mut cx, &mut thin_vec::ThinVec::new(), 1)
        .is_pending());
    c.end_request();
    assert_eq!(count.0.load(Ordering::SeqCst), 1);
    assert_eq!(c.requests_in_flight(), 1);
    assert!(!c.must_wait_for_engine(2));
    // No reader waiting: no wake.
    c.end_request();
    assert_eq!(count.0.load(Ordering::SeqCst), 1);
    assert_eq!(c.requests_in_flight(), 0);
}

#[test]
fn rooms_are_bounded() {
    let c = conn();
    let a: Arc<str> = "a".into();
    let b: Arc<str> = "b".into();
    assert_eq!(c.add_room(&a, 1), Ok(true));
    assert_eq!(c.add_room(&a, 1), Ok(false));
    assert_eq!(c.add_room(&b, 1), Err(ErrorCode::TOO_MANY_ROOMS));
    assert!(c.remove_room("a"));
    assert!(!c.in_room("a"));
}

#[test]
fn a_connection_whose_rooms_were_taken_joins_no_more() {
    let c = conn();
    let a: Arc<str> = "a".into();
    c.add_room(&a, 4).unwrap();
    assert_eq!(c.take_rooms(), vec![a.clone()]);
    // A JOIN that reaches the engine after the disconnect.
    assert_eq!(c.add_room(&a, 4), Ok(false));
    assert!(!c.in_room("a"));
}

#[test]
fn a_queued_frame_stays_48_bytes() {
    // Every frame waiting in every outbox pays for this; `framed` lives in the stamp's padding.
    assert_eq!(std::mem::size_of::<Queued>(), 48);
}
