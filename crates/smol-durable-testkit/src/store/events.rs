//! Events: appended in order, once.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use super::*;

/// This theme's cases, for [`store_conformance_tests!`](crate::store_conformance_tests).
#[doc(hidden)]
#[macro_export]
macro_rules! __store_events_cases {
    ($factory:expr, $attrs:tt) => {
        $crate::__conformance_cases!(
            $attrs,
            store::events,
            $factory,
            events_come_back_in_order_per_run,
            the_newest_events_come_back_in_order,
            appending_an_event_again_stores_it_once,
            an_event_whose_document_is_not_json_is_refused
        );
    };
}

/// A `workflow.log` event of `run` carrying `payload`.
fn log_event(run: &CreatedRun, payload: Value) -> EventRow {
    EventRow::from(&NewEvent {
        event_id: smol_durable_core::new_id("evt"),
        run_id: run.run.run_id.clone(),
        root_run_id: run.run.run_id.clone(),
        attempt_id: None,
        step_id: None,
        event_type: smol_durable_core::EventType::Log,
        payload,
        created_at: 5,
    })
}

/// Events come back per run in append order, with increasing `seq`, and page by `after_seq`.
///
/// Checks
/// [`DurableStore::append_events`](smol_durable_core::DurableStore::append_events),
/// [`StoreAdmin::read_events`](smol_durable_core::StoreAdmin::read_events).
pub async fn events_come_back_in_order_per_run(fixture: Fixture) {
    let store = fixture.store.as_ref();
    let one = seed(store, ClaimScope::Local, 0).await;
    let two = seed(store, ClaimScope::Local, 0).await;
    let event = |run: &CreatedRun, n: usize| {
        log_event(
            run,
            json!({"type": "workflow.log", "message": format!("m{n}"), "text": "ünï"}),
        )
    };
    for batch in 0..5 {
        let events: Vec<EventRow> = (0..4)
            .map(|i| event(if i % 2 == 0 { &one } else { &two }, batch * 4 + i))
            .collect();
        store.append_events(&events).await.expect("append");
    }
    let other = fixture.another_handle().await;
    let read = other
        .read_events(&one.run.run_id, 0, 1_000)
        .await
        .expect("read");
    let messages: Vec<String> = read
        .iter()
        .map(|e| e.payload["message"].as_str().unwrap_or("").to_owned())
        .collect();
    let expected: Vec<String> = (0..20)
        .filter(|n| n % 2 == 0)
        .map(|n| format!("m{n}"))
        .collect();
    assert_eq!(messages, expected);
    assert!(read.windows(2).all(|w| w[0].seq < w[1].seq));
    assert_eq!(read[0].payload["text"], json!("ünï"));
    let page = other
        .read_events(&one.run.run_id, read[3].seq, 2)
        .await
        .expect("page");
    assert_eq!(page.len(), 2);
    assert_eq!(page[0].event_id, read[4].event_id);
}

/// The newest events of a run come back in append order, past a page of the paging default,
/// without another run's.
///
/// Checks [`StoreAdmin::read_newest_events`](smol_durable_core::StoreAdmin::read_newest_events).
pub async fn the_newest_events_come_back_in_order(fixture: Fixture) {
    let store = fixture.store.as_ref();
    let one = seed(store, ClaimScope::Local, 0).await;
    let two = seed(store, ClaimScope::Local, 0).await;
    let event = |run: &CreatedRun, n: usize| log_event(run, json!({ "n": n }));
    for batch in 0..11 {
        let mut events: Vec<EventRow> = (0..100).map(|i| event(&one, batch * 100 + i)).collect();
        events.push(event(&two, 10_000 + batch));
        store.append_events(&events).await.expect("append");
    }
    let other = fixture.another_handle().await;
    let numbers = |events: &[EventRecord]| -> Vec<u64> {
        events
            .iter()
            .filter_map(|event| event.payload["n"].as_u64())
            .collect()
    };
    let newest = other
        .read_newest_events(&one.run.run_id, 3)
        .await
        .expect("read");
    assert_eq!(numbers(&newest), [1_097, 1_098, 1_099]);
    let all = other
        .read_newest_events(&one.run.run_id, 5_000)
        .await
        .expect("read");
    assert_eq!(numbers(&all), (0..1_100).collect::<Vec<u64>>());
    assert!(all.windows(2).all(|w| w[0].seq < w[1].seq));
    let theirs = other
        .read_newest_events(&two.run.run_id, 2)
        .await
        .expect("read");
    assert_eq!(numbers(&theirs), [10_009, 10_010]);
    assert!(other
        .read_newest_events("run_missing", 10)
        .await
        .expect("read")
        .is_empty());
}

/// Appending is idempotent by event id, so a retried append whose answer was lost adds
/// nothing: the events already stored are skipped, new ones in the same batch are kept.
///
/// Checks [`DurableStore::append_events`](smol_durable_core::DurableStore::append_events).
pub async fn appending_an_event_again_stores_it_once(fixture: Fixture) {
    let store = fixture.store.as_ref();
    let created = seed(store, ClaimScope::Local, 0).await;
    let run_id = created.run.run_id.clone();
    let event = |n: i64| {
        EventRow::from(&NewEvent {
            event_id: smol_durable_core::new_id("evt"),
            run_id: run_id.clone(),
            root_run_id: run_id.clone(),
            attempt_id: None,
            step_id: None,
            event_type: smol_durable_core::EventType::Log,
            payload: json!({ "n": n }),
            created_at: n,
        })
    };
    let (first, second, third) = (event(1), event(2), event(3));
    let batch = vec![first.clone(), second.clone()];
    store.append_events(&batch).await.expect("append");
    store.append_events(&batch).await.expect("append again");
    store
        .append_events(&[second, third])
        .await
        .expect("append one old, one new");
    let other = fixture.another_handle().await;
    let stored = other.read_events(&run_id, 0, 10).await.expect("read");
    let numbers: Vec<&Value> = stored.iter().map(|event| &event.payload["n"]).collect();
    assert_eq!(numbers, [&json!(1), &json!(2), &json!(3)]);
    assert_eq!(stored[0].event_id, first.event_id);
}

/// An event row's document must be one JSON document: a batch holding a row whose text is not
/// is refused whole, and the store goes on appending valid batches.
///
/// Checks [`DurableStore::append_events`](smol_durable_core::DurableStore::append_events).
pub async fn an_event_whose_document_is_not_json_is_refused(fixture: Fixture) {
    let store = fixture.store.as_ref();
    let created = seed(store, ClaimScope::Local, 0).await;
    let good = log_event(&created, json!({ "n": 1 }));
    let mut bad = log_event(&created, json!({ "n": 2 }));
    bad.payload = "{\"n\": 2".to_owned();
    store
        .append_events(&[good.clone(), bad])
        .await
        .expect_err("a document that is not JSON is refused");
    let after = log_event(&created, json!({ "n": 3 }));
    store.append_events(&[after]).await.expect("append");
    let other = fixture.another_handle().await;
    let stored = other
        .read_events(&created.run.run_id, 0, 10)
        .await
        .expect("read");
    let numbers: Vec<&Value> = stored.iter().map(|event| &event.payload["n"]).collect();
    assert_eq!(numbers, [&json!(3)]);
}
