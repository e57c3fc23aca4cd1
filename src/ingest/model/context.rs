//! The `context` object of an event: the client's environment (page, app, device, OS, campaign,
//! library), each field type-checked with its full path.

use std::borrow::Cow;
use std::net::IpAddr;

use super::{wrong_kind, Field, Rejection, MAX_TEXT_LEN};

/// Context of an event as sent by the client.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Context {
    /// Only set when the sender may vouch for it (trusted server keys).
    pub ip: Option<IpAddr>,
    pub user_agent: String,
    pub locale: String,
    pub page_url: String,
    pub page_path: String,
    pub page_referrer: String,
    pub page_title: String,
    pub app_version: String,
    pub device_type: String,
    pub device_model: String,
    pub os_name: String,
    pub os_version: String,
    pub utm_source: String,
    pub utm_medium: String,
    pub utm_campaign: String,
    pub utm_term: String,
    pub utm_content: String,
    pub library: String,
}

/// Members of a JSON object read leniently: each known key is taken once, the rest ignored.
struct Members<'a, 'p> {
    members: Vec<(Cow<'a, str>, Field<'a>)>,
    /// JSON path of the object, for messages (`context.page`).
    path: &'p str,
}

impl<'a, 'p> Members<'a, 'p> {
    fn take(&mut self, key: &str) -> Option<Field<'a>> {
        let at = self.members.iter().rposition(|(k, _)| k == key)?;
        Some(self.members.swap_remove(at).1)
    }

    /// A text value; numbers are taken as their decimal text.
    fn text(&mut self, key: &str) -> Result<String, Rejection> {
        let text = match self.take(key) {
            None | Some(Field::Null) => return Ok(String::new()),
            Some(Field::Text(s)) => s.into_owned(),
            Some(Field::Number(n)) => n.to_string(),
            Some(other) => {
                return Err(wrong_kind(
                    &format!("{}.{key}", self.path),
                    "a string",
                    &other,
                ))
            }
        };
        if text.len() > MAX_TEXT_LEN && text.chars().count() > MAX_TEXT_LEN {
            return Err(Rejection::new(
                "too_long",
                format!("{}.{key}", self.path),
                format!("must be at most {MAX_TEXT_LEN} characters"),
            ));
        }
        Ok(text)
    }

    /// A nested object, if sent.
    fn object<'q>(
        &mut self,
        key: &str,
        path: &'q str,
    ) -> Result<Option<Members<'a, 'q>>, Rejection> {
        match self.take(key) {
            None | Some(Field::Null) => Ok(None),
            Some(Field::Object(members)) => Ok(Some(Members { members, path })),
            Some(other) => Err(wrong_kind(path, "an object", &other)),
        }
    }
}

pub(super) fn parse_context(
    members: Vec<(Cow<'_, str>, Field<'_>)>,
    trust_ip: bool,
) -> Result<Context, Rejection> {
    let mut map = Members {
        members,
        path: "context",
    };
    let mut context = Context::default();
    let ip_text = map.text("ip")?;
    if !ip_text.is_empty() {
        let ip: IpAddr = ip_text.parse().map_err(|_| {
            Rejection::new(
                "invalid_value",
                "context.ip",
                format!("{ip_text:?} is not an IP address"),
            )
        })?;
        if trust_ip {
            context.ip = Some(ip);
        }
    }
    context.user_agent = map.text("user_agent")?;
    context.locale = map.text("locale")?;
    context.library = map.text("library")?;
    if let Some(mut page) = map.object("page", "context.page")? {
        context.page_url = page.text("url")?;
        context.page_path = page.text("path")?;
        context.page_referrer = page.text("referrer")?;
        context.page_title = page.text("title")?;
    }
    if let Some(mut app) = map.object("app", "context.app")? {
        context.app_version = app.text("version")?;
    }
    if let Some(mut device) = map.object("device", "context.device")? {
        context.device_type = device.text("type")?;
        context.device_model = device.text("model")?;
    }
    if let Some(mut os) = map.object("os", "context.os")? {
        context.os_name = os.text("name")?;
        context.os_version = os.text("version")?;
    }
    if let Some(mut campaign) = map.object("campaign", "context.campaign")? {
        context.utm_source = campaign.text("source")?;
        context.utm_medium = campaign.text("medium")?;
        context.utm_campaign = campaign.text("name")?;
        context.utm_term = campaign.text("term")?;
        context.utm_content = campaign.text("content")?;
    }
    Ok(context)
}
