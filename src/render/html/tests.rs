//! The page read back with an XML parser: what the report has is drawn, once each, and nothing
//! reaches outside the file.

use std::time::Duration;

use quick_xml::events::Event;
use quick_xml::Reader;
use relapse_core::report::{RunReport, SeriesSample, SliSeries};

use super::*;
use crate::export::fixtures;

/// A series over the fixture's run: healthy, failing from 2.04 s to 2.9 s, healthy again.
fn with_series(mut r: RunReport) -> RunReport {
    r.sli = Some(SliSeries {
        probe: "web".into(),
        every: Duration::from_millis(50),
        samples: (0..280)
            .map(|i| {
                let failing = (41..58).contains(&i);
                SeriesSample {
                    at: Duration::from_millis(i * 50),
                    latency: Duration::from_micros(if failing { 500_000 } else { 1_200 + i * 7 }),
                    status: if failing { Some(504) } else { Some(200) },
                    error: failing.then(|| "status 504".to_string()),
                }
            })
            .collect(),
    });
    r
}

/// Every element's name and attributes, in document order (the parser fails the test on
/// markup that is not well formed).
fn elements(page: &str) -> Vec<(String, Vec<(String, String)>)> {
    let mut reader = Reader::from_str(page);
    let mut out = Vec::new();
    loop {
        match reader.read_event().expect("the page is well-formed XML") {
            Event::Eof => break,
            Event::Start(e) | Event::Empty(e) => {
                let name = String::from_utf8(e.name().as_ref().to_vec()).unwrap();
                let attributes = e
                    .attributes()
                    .map(|a| {
                        let a = a.expect("well-formed attribute");
                        (
                            String::from_utf8(a.key.as_ref().to_vec()).unwrap(),
                            String::from_utf8(a.value.to_vec()).unwrap(),
                        )
                    })
                    .collect();
                out.push((name, attributes));
            }
            _ => {}
        }
    }
    out
}

fn attribute<'a>(element: &'a (String, Vec<(String, String)>), key: &str) -> Option<&'a str> {
    element
        .1
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
}

fn with_class<'a>(
    all: &'a [(String, Vec<(String, String)>)],
    class: &str,
) -> Vec<&'a (String, Vec<(String, String)>)> {
    all.iter()
        .filter(|e| attribute(e, "class").is_some_and(|c| c.split(' ').any(|c| c == class)))
        .collect()
}

#[test]
fn each_fault_has_its_span_and_each_event_its_mark() {
    let runs = vec![
        with_series(fixtures::failover_run()),
        fixtures::run("primary-hang"),
    ];
    let page = page(&runs);
    let all = elements(&page);

    let spans = with_class(&all, "fault-span");
    let faults: Vec<&str> = spans
        .iter()
        .map(|e| attribute(e, "data-fault").unwrap())
        .collect();
    let expected: Vec<&str> = runs
        .iter()
        .flat_map(|r| r.episodes.iter().flat_map(|e| e.faults.iter()))
        .map(String::as_str)
        .collect();
    assert_eq!(faults, expected);

    let marks = with_class(&all, "mark");
    for (event, count) in [
        (
            "impact",
            runs.iter()
                .flat_map(|r| &r.episodes)
                .filter(|e| e.time_to_impact.is_some())
                .count(),
        ),
        (
            "detection",
            runs.iter()
                .flat_map(|r| &r.episodes)
                .filter(|e| e.time_to_detect.is_some())
                .count(),
        ),
        (
            "mitigation",
            runs.iter()
                .flat_map(|r| &r.episodes)
                .filter(|e| e.mitigated_at.is_some())
                .count(),
        ),
        (
            "recovery",
            runs.iter()
                .flat_map(|r| &r.episodes)
                .filter(|e| e.time_to_serve.is_some())
                .count(),
        ),
    ] {
        let drawn = marks
            .iter()
            .filter(|m| attribute(m, "data-event") == Some(event))
            .count();
        assert_eq!(drawn, count, "{event} marks");
    }
    // The failover run's second episode was never mitigated: 4 + 3 marks, and 4 for the other.
    assert_eq!(marks.len(), 4 + 3 + 4);

    // A steady window before injection per run, plus one per mitigation and recovery.
    assert_eq!(with_class(&all, "steady-window").len(), 2 + 3 + 2);
    // The failures of the series are drawn; the run without one says so.
    let failures = with_class(&all, "failures");
    assert_eq!(failures.len(), 1);
    assert!(attribute(failures[0], "d").unwrap().matches('M').count() >= 17);
    assert!(page.contains("no SLI samples in this report"));
    // One strip plot per scenario and episode: failover's two, primary-hang's one.
    assert_eq!(with_class(&all, "distribution").len(), 3);
    assert!(page.contains("✗ FAILED</b> recover_within[2]"));
}

#[test]
fn nothing_in_the_page_reaches_outside_it() {
    let page = page(&[with_series(fixtures::failover_run())]);
    let all = elements(&page);
    assert!(!all
        .iter()
        .any(|(name, _)| name == "script" || name == "link" || name == "img"));
    for element in &all {
        for (key, value) in &element.1 {
            if key == "src" || key == "href" || key.ends_with(":href") {
                assert!(value.starts_with('#'), "{key}={value}");
            }
            assert!(!value.contains("url(http"), "{key}={value}");
        }
    }
    for needle in ["http://", "https://", "@import", "<script"] {
        assert!(!page.contains(needle), "the page contains {needle}");
    }
}

#[test]
fn text_from_the_report_cannot_break_the_markup() {
    let mut r = fixtures::run("a<b>&\"c\"");
    r.gates[0].message = "</li><script>alert(1)</script>".into();
    let page = page(&[r]);
    elements(&page);
    assert!(!page.contains("<script>"));
    assert!(page.contains("a&lt;b&gt;&amp;&quot;c&quot;"));
}

#[test]
fn an_hour_at_50ms_draws_one_stroke_per_column_not_per_sample() {
    let mut r = with_series(fixtures::run("long"));
    r.duration = Duration::from_secs(3_600);
    r.sli.as_mut().unwrap().samples = (0..72_000)
        .map(|i| SeriesSample {
            at: Duration::from_millis(i * 50),
            latency: Duration::from_micros(1_000 + (i % 500)),
            status: Some(200),
            error: None,
        })
        .collect();
    let page = page(&[r]);
    assert!(page.len() < 200_000, "{} bytes", page.len());
}
