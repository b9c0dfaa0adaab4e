//! No request is lost or duplicated when a member dies under load: every request either reaches
//! exactly one member or gets a clear status, and none reaches a member twice.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_killed_under_load_loses_and_duplicates_nothing() {
    const CLIENTS: usize = 16;
    const PER_CLIENT: usize = 40;
    let (web1, mut web2) = two_backends().await;
    let fulcrum = Fulcrum::start(&balancer_config(&[(&web1.url(), "web1", 1), (&web2.url(), "web2", 1)], "", ""));
    let url = fulcrum.url("/sleep/2");

    let load: Vec<_> = (0..CLIENTS)
        .map(|c| {
            let (client, url) = (client(), url.clone());
            tokio::spawn(async move {
                let mut answers = Vec::new();
                for r in 0..PER_CLIENT {
                    let id = format!("{c}-{r}");
                    let answer = get(&client, &url, &[("x-request-id", &id)]).await;
                    answers.push((id, answer.status.as_u16(), answer.served_by().to_string()));
                }
                answers
            })
        })
        .collect();
    // Kill web2 while the load runs (bounded: the load is CLIENTS x PER_CLIENT requests).
    tokio::time::sleep(Duration::from_millis(150)).await;
    let web2_ids_before_stop = web2.request_ids().len();
    web2.stop().await;

    let mut statuses: BTreeMap<u16, usize> = BTreeMap::new();
    let mut answered_by: BTreeMap<String, String> = BTreeMap::new();
    for task in load {
        for (id, status, member) in task.await.unwrap() {
            *statuses.entry(status).or_default() += 1;
            match status {
                200 => {
                    answered_by.insert(id, member);
                }
                // A request in flight on the killed member's connection: it may have reached the
                // member, so it is not sent again; the client gets a clear 502.
                502 => {}
                other => panic!("request {id}: unexpected status {other}"),
            }
        }
    }
    // Count, on the backends, how often each request arrived.
    let mut reached: BTreeMap<String, usize> = BTreeMap::new();
    for id in web1.request_ids().into_iter().chain(web2.request_ids()) {
        *reached.entry(id).or_default() += 1;
    }
    assert!(web2_ids_before_stop > 0, "web2 took part before it was killed");
    assert_eq!(statuses.values().sum::<usize>(), CLIENTS * PER_CLIENT, "every request got an answer");
    for (id, count) in &reached {
        assert_eq!(*count, 1, "request {id} reached a backend {count} times");
    }
    for id in answered_by.keys() {
        assert_eq!(reached.get(id), Some(&1), "request {id} got a 200 but no backend counted it once");
    }
    // At most the requests in flight on web2 when it died (one per client) failed.
    assert!(statuses.get(&502).copied().unwrap_or(0) <= CLIENTS, "{statuses:?}");
    println!("member killed under load: {statuses:?}, {} requests reached a backend", reached.len());
}
