//! Links and images shown on the PagerDuty alert.
//!
//! Links: the generator URL ("Source"), `runbook_url` ("Runbook"), `dashboard_url` and
//! `grafana_url` ("Dashboard") and, given the webhook's `externalURL`, a link that opens
//! Alertmanager's new-silence form pre-filled with the alert's labels. Only absolute http(s)
//! URLs are kept: anything else would be refused by PagerDuty or be unsafe to click.
//! Images: `grafana_snapshot_url` and `image_url`, only over https (PagerDuty shows no other).

use std::cell::RefCell;

use pagerduty_events::{Image, Link};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use url::Url;

use crate::alert::{Alert, Labels};
use crate::format::dedup::prometheus_text;
use crate::format::{FormatNote, clip};

/// What `encodeURIComponent` leaves alone, as Alertmanager's UI expects in `filter=`.
const COMPONENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// The text of the link to Alertmanager's new-silence form. Its URL is the sending
/// Alertmanager's own `externalURL`, which differs between the peers of an HA set.
pub const SILENCE_LINK_TEXT: &str = "Silence in Alertmanager";

/// The alert's links, in a fixed order, without repeats. `external_url` is the webhook's
/// `externalURL` (give `None` for no silence link).
pub fn links(alert: &Alert, external_url: Option<&str>, notes: &mut Vec<FormatNote>) -> Vec<Link> {
    let annotation = |name: &str| alert.annotations.get(name).map(String::as_str);
    let candidates = [
        (alert.generator_url.as_deref(), "Source"),
        (annotation("runbook_url"), "Runbook"),
        (annotation("dashboard_url"), "Dashboard"),
        (annotation("grafana_url"), "Dashboard"),
    ];
    let mut links: Vec<Link> = Vec::new();
    let mut add = |href: Url, text: &str| {
        if !links.iter().any(|known| known.href == href) {
            links.push(Link {
                href,
                text: Some(text.to_owned()),
            });
        }
    };
    for (url, text) in candidates {
        let Some(url) = url.map(str::trim).filter(|url| !url.is_empty()) else {
            continue;
        };
        match recent_web_url(url) {
            Some(href) => add(href, text),
            None => notes.push(FormatNote::LinkDropped { url: clip(url) }),
        }
    }
    if let Some(base) = external_url {
        match silence_link(base, &alert.labels) {
            Ok(href) => add(href, SILENCE_LINK_TEXT),
            Err(url) => notes.push(FormatNote::LinkDropped { url: clip(&url) }),
        }
    }
    links
}

/// `grafana_snapshot_url` and `image_url` as images, when served over https.
pub fn images(alert: &Alert, notes: &mut Vec<FormatNote>) -> Vec<Image> {
    let candidates = [
        ("grafana_snapshot_url", Some("Grafana snapshot")),
        ("image_url", None),
    ];
    let mut images: Vec<Image> = Vec::new();
    for (name, alt) in candidates {
        let Some(url) = alert
            .annotations
            .get(name)
            .map(|url| url.trim())
            .filter(|url| !url.is_empty())
        else {
            continue;
        };
        match Image::new(url, None, alt.map(str::to_owned)) {
            Ok(image) if !images.iter().any(|known| known.src() == image.src()) => {
                images.push(image)
            }
            Ok(_) => {}
            Err(_) => notes.push(FormatNote::ImageDropped { url: clip(url) }),
        }
    }
    images
}

/// Alertmanager's new-silence page, pre-filled with matchers for every label of the alert:
/// `{externalURL}/#/silences/new?filter=%7Balertname%3D%22X%22%2C…%7D`.
pub fn silence_url(external_url: &str, labels: &Labels) -> String {
    format!(
        "{}/{}",
        silence_base(external_url),
        silence_fragment(labels)
    )
}

/// [`silence_url`] as a link, or the URL that is not one. The `externalURL` is the same for
/// every alert of a webhook, so it is parsed once per thread and webhook, not once per alert
/// (the silence link was the longest URL each alert parsed); only the fragment, already
/// percent-encoded, is added per alert. `Url::set_fragment` encodes it as parsing the whole
/// URL would, so the link is the same as `web_url(&silence_url(…))`.
fn silence_link(external_url: &str, labels: &Labels) -> Result<Url, String> {
    thread_local! {
        /// The last `externalURL` seen on this thread, and its base parsed.
        static LAST_BASE: RefCell<Option<(String, Option<Url>)>> = const { RefCell::new(None) };
    }
    let base = LAST_BASE.with_borrow_mut(|last| {
        match last {
            Some((text, base)) if text == external_url => base.clone(),
            _ => {
                let base = web_url(&format!("{}/", silence_base(external_url)))
                    // A base with a fragment of its own would lose it to the silence page's.
                    .filter(|base| base.fragment().is_none());
                *last = Some((external_url.to_owned(), base.clone()));
                base
            }
        }
    });
    let fragment = silence_fragment(labels);
    match base {
        Some(mut url) => {
            // `silence_fragment` starts with '#', which `set_fragment` adds itself.
            url.set_fragment(Some(&fragment[1..]));
            Ok(url)
        }
        None => {
            let url = silence_url(external_url, labels);
            web_url(&url).ok_or(url)
        }
    }
}

/// The `externalURL` as the silence link starts it: without surrounding blanks or trailing
/// slashes.
fn silence_base(external_url: &str) -> &str {
    external_url.trim().trim_end_matches('/')
}

/// `#/silences/new?filter=…`: the alert's labels as matchers, percent-encoded.
fn silence_fragment(labels: &Labels) -> String {
    let filter = prometheus_text(labels);
    format!(
        "#/silences/new?filter={}",
        utf8_percent_encode(&filter, COMPONENT)
    )
}

/// URLs that [`recent_web_url`] remembers per thread.
const RECENT_URLS: usize = 4;

/// [`web_url`], remembering the last few texts parsed on this thread. The alerts of one
/// webhook mostly share their links: a group's alerts come from one rule (one generator URL)
/// and carry its runbook and dashboard annotations, so the same text would be parsed once per
/// alert; parsing a generator URL (a long, percent-encoded query) was the largest part of
/// making an alert's links.
fn recent_web_url(text: &str) -> Option<Url> {
    thread_local! {
        /// Texts and what they parsed to, oldest first.
        static RECENT: RefCell<Vec<(String, Option<Url>)>> =
            const { RefCell::new(Vec::new()) };
    }
    RECENT.with_borrow_mut(|recent| {
        if let Some((_, url)) = recent.iter().find(|(known, _)| known == text) {
            return url.clone();
        }
        let url = web_url(text);
        if recent.len() == RECENT_URLS {
            recent.remove(0);
        }
        recent.push((text.to_owned(), url.clone()));
        url
    })
}

/// `text` parsed, if it is an absolute http(s) URL with a host. Parsed once and kept: parsing
/// URLs was most of the cost of formatting an alert, when each link was parsed twice.
fn web_url(text: &str) -> Option<Url> {
    Url::parse(text)
        .ok()
        .filter(|url| matches!(url.scheme(), "http" | "https") && url.has_host())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alert::AlertStatus;

    fn alert(annotations: &[(&str, &str)], generator_url: Option<&str>) -> Alert {
        Alert {
            status: AlertStatus::Firing,
            labels: Labels::from([
                ("alertname".into(), "DiskFull".into()),
                ("instance".into(), "db-1:9100".into()),
            ]),
            annotations: annotations
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            starts_at: None,
            ends_at: None,
            generator_url: generator_url.map(str::to_owned),
            fingerprint: None,
            dedup_key: None,
            classification: None,
        }
    }

    fn summary(links: &[Link]) -> Vec<(String, String)> {
        links
            .iter()
            .map(|l| (l.href.to_string(), l.text.clone().unwrap_or_default()))
            .collect()
    }

    #[test]
    fn links_in_order_with_silence_link() {
        let mut notes = Vec::new();
        let a = alert(
            &[
                ("runbook_url", "https://runbooks.example/disk"),
                ("dashboard_url", "https://grafana.example/d/1"),
                ("grafana_url", "https://grafana.example/d/1"),
            ],
            Some("http://prom.example:9090/graph?g0.expr=up"),
        );
        let links = links(&a, Some("http://am.example:9093/"), &mut notes);
        assert_eq!(
            summary(&links),
            [
                ("http://prom.example:9090/graph?g0.expr=up".into(), "Source".into()),
                ("https://runbooks.example/disk".into(), "Runbook".into()),
                ("https://grafana.example/d/1".into(), "Dashboard".into()),
                (
                    "http://am.example:9093/#/silences/new?filter=%7Balertname%3D%22DiskFull%22%2Cinstance%3D%22db-1%3A9100%22%7D".into(),
                    "Silence in Alertmanager".into()
                ),
            ]
        );
        assert!(notes.is_empty());
    }

    #[test]
    fn invalid_links_are_dropped_with_a_note() {
        let mut notes = Vec::new();
        let a = alert(
            &[
                ("runbook_url", "wiki/disk"),
                ("dashboard_url", "javascript:alert(1)"),
            ],
            None,
        );
        assert!(links(&a, None, &mut notes).is_empty());
        assert_eq!(
            notes,
            [
                FormatNote::LinkDropped {
                    url: "wiki/disk".into()
                },
                FormatNote::LinkDropped {
                    url: "javascript:alert(1)".into()
                },
            ]
        );
    }

    /// Remembered URLs are only a shortcut: cycling through more texts than are remembered,
    /// valid and not, every alert gets the links and notes that parsing its own texts gives.
    #[test]
    fn remembered_urls_give_what_parsing_gives() {
        let texts: Vec<String> = (0..RECENT_URLS + 2)
            .map(|i| format!("http://prometheus-{i}:9090/graph?g0.expr=up%7Bjob%3D%22{i}%22%7D"))
            .chain(["not a url".to_owned(), "ftp://files.example/x".to_owned()])
            .collect();
        for round in 0..3 {
            for (i, text) in texts.iter().enumerate() {
                let runbook = &texts[(i + round) % texts.len()];
                let a = alert(&[("runbook_url", runbook)], Some(text));
                let mut notes = Vec::new();
                let got = links(&a, None, &mut notes);
                let mut want_notes = Vec::new();
                let mut want = Vec::new();
                for (candidate, label) in [(text, "Source"), (runbook, "Runbook")] {
                    match web_url(candidate) {
                        Some(href) if !want.iter().any(|(known, _)| *known == href.to_string()) => {
                            want.push((href.to_string(), label.to_owned()))
                        }
                        Some(_) => {}
                        None => want_notes.push(FormatNote::LinkDropped {
                            url: candidate.clone(),
                        }),
                    }
                }
                assert_eq!(summary(&got), want, "round {round}, text {i}");
                assert_eq!(notes, want_notes, "round {round}, text {i}");
            }
        }
    }

    #[test]
    fn silence_filter_decodes_to_the_label_matchers() {
        let url = silence_url("https://am.example", &alert(&[], None).labels);
        let (_, filter) = url.split_once("filter=").expect("filter");
        let decoded = percent_encoding::percent_decode_str(filter)
            .decode_utf8()
            .expect("utf-8");
        assert_eq!(decoded, r#"{alertname="DiskFull",instance="db-1:9100"}"#);
    }

    #[test]
    fn the_silence_link_is_the_silence_url_parsed_whatever_the_base() {
        let bases = [
            "https://am.example",
            "https://am.example/",
            "  http://am.example:9093/alertmanager//  ",
            "http://am.example/path?team=db",
            "http://am.example/#/alerts",
            "http://am.example/a b",
            "",
            "am.example",
            "ftp://am.example",
            "http://[::1]:9093",
        ];
        let labels = [
            alert(&[], None).labels,
            Labels::from([
                ("alertname".into(), "Odd \"quoted\" #hash".into()),
                ("path".into(), "/var/lib/ünïcode\n?&=".into()),
            ]),
        ];
        // Twice over, alternating bases, so both the first parse of a base and its reuse
        // (and the switch from one base to another) are compared.
        for _ in 0..2 {
            for base in bases {
                for labels in &labels {
                    let expected = silence_url(base, labels);
                    let link = silence_link(base, labels);
                    match web_url(&expected) {
                        Some(url) => assert_eq!(link, Ok(url), "base {base:?}"),
                        None => assert_eq!(link, Err(expected), "base {base:?}"),
                    }
                }
            }
        }
    }

    #[test]
    fn only_https_images_are_kept() {
        let mut notes = Vec::new();
        let a = alert(
            &[
                (
                    "grafana_snapshot_url",
                    "https://grafana.example/render/1.png",
                ),
                ("image_url", "http://insecure.example/x.png"),
            ],
            None,
        );
        let images = images(&a, &mut notes);
        assert_eq!(images.len(), 1);
        assert_eq!(
            images[0].src().as_str(),
            "https://grafana.example/render/1.png"
        );
        assert_eq!(images[0].alt(), Some("Grafana snapshot"));
        assert_eq!(
            notes,
            [FormatNote::ImageDropped {
                url: "http://insecure.example/x.png".into()
            }]
        );
    }
}
