//! The destination editor: URL, method, headers, query, trigger, body, auth,
//! signing, batching and delivery, each with the engine's error beside it.

use std::collections::HashMap;

use egui::Ui;

use super::widgets::{self, text_row};
use super::{HooklineApp, SecretState};
use crate::core::model::{
    Auth, Batching, Body, ClientAuth, Destination, Envelope, HmacAlgorithm, JwtAlgorithm, Method,
    RowsEnvelope, SignatureEncoding, Signing,
};
use crate::core::render::ConfigError;
use crate::core::secret::Secret;
use crate::runtime::Command;

/// What the editor asks for beyond editing the destination.
enum Action {
    SetSecret(String, String),
    DeleteSecret(String),
    FetchToken,
    Authorize,
}

/// What the secret widgets read.
struct SecretsView<'a> {
    state: &'a HashMap<String, SecretState>,
    input: &'a mut HashMap<String, String>,
    actions: Vec<Action>,
}

/// Errors of one section (and key, when given).
fn errs<'a>(all: &'a [ConfigError], section: &str, key: Option<&str>) -> Vec<&'a str> {
    all.iter()
        .filter(|e| e.path.section == section && (key.is_none() || e.path.key.as_deref() == key))
        .map(|e| e.message.as_str())
        .collect()
}

fn show_errs(ui: &mut Ui, all: &[ConfigError], section: &str, key: Option<&str>) {
    for m in errs(all, section, key) {
        widgets::error(ui, m);
    }
}

pub fn editor_ui(app: &mut HooklineApp, ui: &mut Ui) {
    let Some(original) = app.destination().cloned() else {
        return;
    };
    let errors = super::preview::config_errors(app);
    let mut d = original.clone();
    let mut view = SecretsView {
        state: &app.secret_state,
        input: &mut app.secret_input,
        actions: Vec::new(),
    };
    let token_status = app.token_status.get(&d.name).cloned();
    let authorize_url = app.authorize_url.clone();
    egui::ScrollArea::vertical()
        .id_salt("editor")
        .auto_shrink([false, false])
        .show(ui, |ui| {
            ui.heading(format!("Destination “{}”", d.name));
            request_ui(ui, &mut d, &errors);
            ui.separator();
            trigger_ui(ui, &mut d, &errors);
            ui.separator();
            body_ui(ui, &mut d, &errors);
            ui.separator();
            auth_ui(ui, &mut d, &errors, &mut view);
            if let Some(s) = &token_status {
                ui.label(format!("OAuth2: {s}"));
            }
            if let Some(u) = &authorize_url {
                ui.horizontal(|ui| {
                    ui.label("Authorization URL:");
                    if ui.button("Copy authorization URL").clicked() {
                        ui.ctx().copy_text(u.clone());
                    }
                });
            }
            ui.separator();
            signing_ui(ui, &mut d, &errors, &mut view);
            ui.separator();
            batching_ui(ui, &mut d, &errors);
            ui.separator();
            delivery_ui(ui, &mut d, &errors);
            let other: Vec<&ConfigError> = errors
                .iter()
                .filter(|e| {
                    ![
                        "url", "method", "headers", "query", "trigger", "body", "auth", "signing",
                        "batching", "delivery", "mapping",
                    ]
                    .contains(&e.path.section.as_str())
                })
                .collect();
            for e in other {
                widgets::error(ui, &format!("{}: {}", e.field, e.message));
            }
        });
    let actions = std::mem::take(&mut view.actions);
    if d != original
        && let Some(slot) = app.destination_mut()
    {
        *slot = d.clone();
    }
    for a in actions {
        match a {
            Action::SetSecret(name, value) => {
                app.secret_state.insert(name.clone(), SecretState::Loading);
                app.command(Command::SetSecret {
                    name,
                    value: Secret::new(value),
                });
            }
            Action::DeleteSecret(name) => {
                app.secret_state.insert(name.clone(), SecretState::Loading);
                app.command(Command::DeleteSecret { name });
            }
            Action::FetchToken => {
                app.token_status
                    .insert(d.name.clone(), "fetching a token…".into());
                app.command(Command::FetchToken {
                    destination: Box::new(d.clone()),
                });
            }
            Action::Authorize => {
                app.token_status
                    .insert(d.name.clone(), "waiting for the browser…".into());
                app.command(Command::Authorize {
                    destination: Box::new(d.clone()),
                    timeout: std::time::Duration::from_mins(5),
                    open_browser: true,
                });
            }
        }
    }
    if d != original {
        app.load_secrets();
    }
}

fn request_ui(ui: &mut Ui, d: &mut Destination, errors: &[ConfigError]) {
    ui.horizontal(|ui| {
        let l = ui.label("Method");
        egui::ComboBox::from_id_salt("method")
            .selected_text(d.method.as_str())
            .show_ui(ui, |ui| {
                for m in [
                    Method::Post,
                    Method::Put,
                    Method::Patch,
                    Method::Get,
                    Method::Delete,
                ] {
                    ui.selectable_value(&mut d.method, m, m.as_str());
                }
            })
            .response
            .labelled_by(l.id);
    });
    text_row(ui, "URL", &mut d.url);
    show_errs(ui, errors, "url", None);
    ui.collapsing("Headers", |ui| {
        let e: Vec<(Option<String>, String)> = errors
            .iter()
            .filter(|e| e.path.section == "headers")
            .map(|e| (e.path.key.clone(), e.message.clone()))
            .collect();
        widgets::map_ui(ui, "header", &mut d.headers, &e);
        ui.checkbox(
            &mut d.dynamic_overrides,
            "Events may override headers and path (header, appendPath, fullPath)",
        );
    });
    ui.collapsing("Query", |ui| {
        let e: Vec<(Option<String>, String)> = errors
            .iter()
            .filter(|e| e.path.section == "query")
            .map(|e| (e.path.key.clone(), e.message.clone()))
            .collect();
        widgets::map_ui(ui, "query parameter", &mut d.query, &e);
    });
}

fn trigger_ui(ui: &mut Ui, d: &mut Destination, errors: &[ConfigError]) {
    ui.label(egui::RichText::new("Trigger").strong());
    ui.horizontal_wrapped(|ui| {
        ui.label("Event types (none ticked: all)");
        for t in crate::core::model::EVENT_TYPES {
            let mut on = d.trigger.types.iter().any(|x| x == t);
            if ui.checkbox(&mut on, t).changed() {
                if on {
                    d.trigger.types.push(t.to_owned());
                } else {
                    d.trigger.types.retain(|x| x != t);
                }
            }
        }
    });
    let mut names = d.trigger.events.join(", ");
    if text_row(ui, "Event names (comma-separated)", &mut names).changed() {
        d.trigger.events = names
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect();
    }
    let mut expr = d.trigger.expression.clone().unwrap_or_default();
    if text_row(ui, "Trigger expression", &mut expr).changed() {
        d.trigger.expression = (!expr.trim().is_empty()).then_some(expr);
    }
    show_errs(ui, errors, "trigger", None);
}

fn body_ui(ui: &mut Ui, d: &mut Destination, errors: &[ConfigError]) {
    let label = match &d.body {
        Body::Event => "Whole event (JSON)",
        Body::EventUrlencoded { .. } => "Whole event, URL-encoded field",
        Body::Mapped => "Mapped fields (JSON)",
        Body::Form => "Mapped fields (form)",
        Body::Template { .. } => "Template",
    };
    ui.horizontal(|ui| {
        let l = ui.label("Body");
        egui::ComboBox::from_id_salt("body-mode")
            .selected_text(label)
            .show_ui(ui, |ui| {
                let mut pick = |ui: &mut Ui, b: Body, text: &str| {
                    if ui
                        .selectable_label(
                            std::mem::discriminant(&d.body) == std::mem::discriminant(&b),
                            text,
                        )
                        .clicked()
                        && std::mem::discriminant(&d.body) != std::mem::discriminant(&b)
                    {
                        d.body = b;
                    }
                };
                pick(ui, Body::Event, "Whole event (JSON)");
                pick(
                    ui,
                    Body::EventUrlencoded {
                        field: "data".into(),
                    },
                    "Whole event, URL-encoded field",
                );
                pick(ui, Body::Mapped, "Mapped fields (JSON)");
                pick(ui, Body::Form, "Mapped fields (form)");
                pick(
                    ui,
                    Body::Template {
                        template: "{{ event | tojson }}".into(),
                        content_type: "application/json".into(),
                    },
                    "Template",
                );
            })
            .response
            .labelled_by(l.id);
    });
    match &mut d.body {
        Body::EventUrlencoded { field } => {
            text_row(ui, "Form field", field);
        }
        Body::Template {
            template,
            content_type,
        } => {
            text_row(ui, "Content type", content_type);
            let l = ui.label("Body template");
            ui.add(
                egui::TextEdit::multiline(template)
                    .code_editor()
                    .desired_rows(6)
                    .desired_width(f32::INFINITY),
            )
            .labelled_by(l.id);
        }
        Body::Event | Body::Mapped | Body::Form => {}
    }
    show_errs(ui, errors, "body", None);
}

/// A secret's name, whether it is set, and a field to set or replace it. The value
/// goes to the keyring through the runtime; the app never shows it.
fn secret_ui(ui: &mut Ui, label: &str, name: &mut String, view: &mut SecretsView<'_>) {
    text_row(ui, &format!("{label} (secret name)"), name);
    if name.trim().is_empty() {
        return;
    }
    let state = view.state.get(name.as_str()).copied();
    ui.horizontal(|ui| {
        let status = match state {
            Some(SecretState::Set) => "set",
            Some(SecretState::NotSet) => "not set",
            Some(SecretState::Unavailable) => "keyring unavailable (see the status bar)",
            Some(SecretState::Loading) | None => "checking…",
        };
        ui.label(format!("Secret “{name}”: {status}"));
        let input = view.input.entry(name.clone()).or_default();
        widgets::secret_value(ui, name, input);
        let verb = if state == Some(SecretState::Set) {
            "Replace"
        } else {
            "Set"
        };
        if ui
            .add_enabled(
                !input.is_empty(),
                egui::Button::new(format!("{verb} {name}")),
            )
            .clicked()
        {
            let value = std::mem::take(input);
            view.actions.push(Action::SetSecret(name.clone(), value));
        }
        if state == Some(SecretState::Set) && ui.button(format!("Delete {name}")).clicked() {
            view.actions.push(Action::DeleteSecret(name.clone()));
        }
    });
}

fn auth_ui(ui: &mut Ui, d: &mut Destination, errors: &[ConfigError], view: &mut SecretsView<'_>) {
    let kinds = [
        "None",
        "Basic",
        "Bearer token",
        "Custom header",
        "API key",
        "JWT",
        "OAuth2 client credentials",
        "OAuth2 authorization code",
    ];
    let current = match &d.auth {
        Auth::None => 0,
        Auth::Basic { .. } => 1,
        Auth::Bearer { .. } => 2,
        Auth::Header { .. } => 3,
        Auth::ApiKey { .. } => 4,
        Auth::Jwt { .. } => 5,
        Auth::Oauth2ClientCredentials { .. } => 6,
        Auth::Oauth2AuthorizationCode { .. } => 7,
    };
    let pick = widgets::kind_picker(ui, "Auth", "auth-kind", &kinds, current);
    if pick != current {
        let secret = format!("{}-secret", d.name.replace(' ', "-"));
        d.auth = match pick {
            1 => Auth::Basic {
                username: String::new(),
                password_secret: secret,
            },
            2 => Auth::Bearer {
                token_secret: secret,
            },
            3 => Auth::Header {
                name: "Authorization".into(),
                value_secret: secret,
            },
            4 => Auth::ApiKey {
                header: Some("X-API-Key".into()),
                query: None,
                value_secret: secret,
            },
            5 => Auth::Jwt {
                algorithm: JwtAlgorithm::HS256,
                key_secret: secret,
                claims: indexmap::IndexMap::new(),
                ttl_s: 300,
                header: "Authorization".into(),
                prefix: "Bearer ".into(),
            },
            6 => Auth::Oauth2ClientCredentials {
                token_url: "https://auth.example.com/oauth/token".into(),
                client_id: String::new(),
                client_secret: secret,
                scopes: Vec::new(),
                audience: None,
                client_auth: ClientAuth::default(),
            },
            7 => Auth::Oauth2AuthorizationCode {
                authorize_url: "https://auth.example.com/authorize".into(),
                token_url: "https://auth.example.com/oauth/token".into(),
                client_id: String::new(),
                client_secret: None,
                scopes: Vec::new(),
                client_auth: ClientAuth::default(),
                refresh_token_secret: format!("{secret}-refresh"),
                redirect_port: 0,
            },
            _ => Auth::None,
        };
    }
    match &mut d.auth {
        Auth::None => {}
        Auth::Basic {
            username,
            password_secret,
        } => {
            text_row(ui, "Username", username);
            secret_ui(ui, "Password", password_secret, view);
        }
        Auth::Bearer { token_secret } => secret_ui(ui, "Token", token_secret, view),
        Auth::Header { name, value_secret } => {
            text_row(ui, "Header name", name);
            secret_ui(ui, "Header value", value_secret, view);
        }
        Auth::ApiKey {
            header,
            query,
            value_secret,
        } => {
            let mut h = header.clone().unwrap_or_default();
            if text_row(ui, "In header", &mut h).changed() {
                *header = (!h.is_empty()).then_some(h);
            }
            let mut q = query.clone().unwrap_or_default();
            if text_row(ui, "In query parameter", &mut q).changed() {
                *query = (!q.is_empty()).then_some(q);
            }
            secret_ui(ui, "API key", value_secret, view);
        }
        Auth::Jwt {
            algorithm,
            key_secret,
            claims,
            ttl_s,
            header,
            prefix,
        } => {
            ui.horizontal(|ui| {
                let l = ui.label("Algorithm");
                egui::ComboBox::from_id_salt("jwt-alg")
                    .selected_text(format!("{algorithm:?}"))
                    .show_ui(ui, |ui| {
                        for a in [
                            JwtAlgorithm::HS256,
                            JwtAlgorithm::HS384,
                            JwtAlgorithm::HS512,
                            JwtAlgorithm::RS256,
                            JwtAlgorithm::ES256,
                        ] {
                            ui.selectable_value(algorithm, a, format!("{a:?}"));
                        }
                    })
                    .response
                    .labelled_by(l.id);
            });
            secret_ui(ui, "Signing key", key_secret, view);
            widgets::number_row(ui, "Lifetime (s)", ttl_s, 1..=86_400);
            text_row(ui, "JWT header", header);
            text_row(ui, "JWT prefix", prefix);
            ui.label("Claims (templates)");
            widgets::map_ui(ui, "claim", claims, &[]);
        }
        Auth::Oauth2ClientCredentials {
            token_url,
            client_id,
            client_secret,
            scopes,
            audience,
            client_auth,
        } => {
            text_row(ui, "Token URL", token_url);
            text_row(ui, "Client ID", client_id);
            secret_ui(ui, "Client secret", client_secret, view);
            scopes_ui(ui, scopes);
            let mut a = audience.clone().unwrap_or_default();
            if text_row(ui, "Audience", &mut a).changed() {
                *audience = (!a.is_empty()).then_some(a);
            }
            client_auth_ui(ui, client_auth);
            if ui.button("Get token").clicked() {
                view.actions.push(Action::FetchToken);
            }
        }
        Auth::Oauth2AuthorizationCode {
            authorize_url,
            token_url,
            client_id,
            client_secret,
            scopes,
            client_auth,
            refresh_token_secret,
            redirect_port,
        } => {
            text_row(ui, "Authorize URL", authorize_url);
            text_row(ui, "Token URL", token_url);
            text_row(ui, "Client ID", client_id);
            let mut cs = client_secret.clone().unwrap_or_default();
            secret_ui(ui, "Client secret", &mut cs, view);
            *client_secret = (!cs.is_empty()).then_some(cs);
            scopes_ui(ui, scopes);
            client_auth_ui(ui, client_auth);
            text_row(ui, "Refresh token (secret name)", refresh_token_secret);
            widgets::number_row(ui, "Redirect port (0: any)", redirect_port, 0..=65_535);
            ui.horizontal(|ui| {
                if ui.button("Sign in with browser").clicked() {
                    view.actions.push(Action::Authorize);
                }
                if ui.button("Get token").clicked() {
                    view.actions.push(Action::FetchToken);
                }
            });
        }
    }
    show_errs(ui, errors, "auth", None);
}

fn scopes_ui(ui: &mut Ui, scopes: &mut Vec<String>) {
    let mut s = scopes.join(" ");
    if text_row(ui, "Scopes (space-separated)", &mut s).changed() {
        *scopes = s.split_whitespace().map(str::to_owned).collect();
    }
}

fn client_auth_ui(ui: &mut Ui, c: &mut ClientAuth) {
    ui.horizontal(|ui| {
        ui.label("Client authentication");
        ui.radio_value(c, ClientAuth::ClientSecretBasic, "Basic header");
        ui.radio_value(c, ClientAuth::ClientSecretPost, "In the form body");
    });
}

fn signing_ui(
    ui: &mut Ui,
    d: &mut Destination,
    errors: &[ConfigError],
    view: &mut SecretsView<'_>,
) {
    let current = match &d.signing {
        Signing::None => 0,
        Signing::Hmac { .. } => 1,
        Signing::StandardWebhooks { .. } => 2,
    };
    let kinds = ["None", "HMAC", "Standard Webhooks"];
    let pick = widgets::kind_picker(ui, "Signing", "signing-kind", &kinds, current);
    if pick != current {
        let secret = format!("{}-signing", d.name.replace(' ', "-"));
        d.signing = match pick {
            1 => Signing::Hmac {
                algorithm: HmacAlgorithm::Sha256,
                encoding: SignatureEncoding::Hex,
                header: "X-Signature".into(),
                prefix: String::new(),
                secret,
            },
            2 => Signing::StandardWebhooks { secret },
            _ => Signing::None,
        };
    }
    match &mut d.signing {
        Signing::None => {}
        Signing::Hmac {
            algorithm,
            encoding,
            header,
            prefix,
            secret,
        } => {
            ui.horizontal(|ui| {
                ui.label("Algorithm");
                ui.radio_value(algorithm, HmacAlgorithm::Sha1, "SHA-1");
                ui.radio_value(algorithm, HmacAlgorithm::Sha256, "SHA-256");
                ui.label("Encoding");
                ui.radio_value(encoding, SignatureEncoding::Hex, "hex");
                ui.radio_value(encoding, SignatureEncoding::Base64, "Base64");
            });
            text_row(ui, "Signature header", header);
            text_row(ui, "Signature prefix", prefix);
            secret_ui(ui, "Signing secret", secret, view);
        }
        Signing::StandardWebhooks { secret } => {
            secret_ui(ui, "Signing secret (whsec_…)", secret, view);
        }
    }
    show_errs(ui, errors, "signing", None);
}

fn batching_ui(ui: &mut Ui, d: &mut Destination, errors: &[ConfigError]) {
    let mut on = d.batching.is_some();
    if ui.checkbox(&mut on, "Batch events").changed() {
        d.batching = on.then(Batching::default);
    }
    if let Some(b) = &mut d.batching {
        widgets::number_row(
            ui,
            "Max events per request",
            &mut b.max_events,
            1..=crate::core::model::MAX_BATCH_EVENTS,
        );
        widgets::number_row(
            ui,
            "Max bytes per request",
            &mut b.max_bytes,
            1..=100_000_000,
        );
        let current = match &b.envelope {
            Envelope::Array => 0,
            Envelope::Rows(_) => 1,
            Envelope::Template(_) => 2,
        };
        let kinds = ["JSON array", "Rows envelope", "Template"];
        let pick = widgets::kind_picker(ui, "Envelope", "envelope", &kinds, current);
        if pick != current {
            b.envelope = match pick {
                1 => Envelope::Rows(RowsEnvelope {
                    sync_mode: "insert".into(),
                    operation: "added".into(),
                    primary_key: None,
                }),
                2 => Envelope::Template("{\"batch\": {{ events | tojson }}}".into()),
                _ => Envelope::Array,
            };
        }
        match &mut b.envelope {
            Envelope::Array => {}
            Envelope::Rows(r) => {
                text_row(ui, "Sync mode", &mut r.sync_mode);
                text_row(ui, "Operation", &mut r.operation);
                let mut pk = r.primary_key.clone().unwrap_or_default();
                if text_row(ui, "Primary key", &mut pk).changed() {
                    r.primary_key = (!pk.is_empty()).then_some(pk);
                }
            }
            Envelope::Template(t) => {
                let l = ui.label("Envelope template");
                ui.add(
                    egui::TextEdit::multiline(t)
                        .code_editor()
                        .desired_rows(4)
                        .desired_width(f32::INFINITY),
                )
                .labelled_by(l.id);
            }
        }
    }
    show_errs(ui, errors, "batching", None);
}

fn delivery_ui(ui: &mut Ui, d: &mut Destination, errors: &[ConfigError]) {
    ui.collapsing("Delivery", |ui| {
        let p = &mut d.delivery;
        widgets::number_row(ui, "Timeout (ms)", &mut p.timeout_ms, 1..=600_000);
        widgets::number_row(ui, "Concurrency", &mut p.concurrency, 1..=1024);
        widgets::number_row(ui, "Max attempts", &mut p.max_attempts, 1..=100);
        let mut limited = p.rate_limit.is_some();
        if ui
            .checkbox(&mut limited, "Limit the rate (requests per second)")
            .changed()
        {
            p.rate_limit = limited.then_some(10.0);
        }
        if let Some(r) = &mut p.rate_limit {
            widgets::number_row(ui, "Requests per second", r, 0.01..=100_000.0);
        }
        widgets::number_row(
            ui,
            "First backoff (ms)",
            &mut p.backoff_initial_ms,
            0..=600_000,
        );
        widgets::number_row(ui, "Max backoff (ms)", &mut p.backoff_max_ms, 0..=3_600_000);
        widgets::number_row(
            ui,
            "Retry-After cap (s)",
            &mut p.retry_after_cap_s,
            0..=86_400,
        );
        ui.checkbox(
            &mut d.accept_invalid_certs,
            "Accept invalid TLS certificates (testing only)",
        );
    });
    show_errs(ui, errors, "delivery", None);
}
