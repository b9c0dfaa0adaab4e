//! Fulcrum's own error responses, shaped like Apache's (same HTML, same headers).

use hyper::header::{CONTENT_TYPE, HeaderValue};
use hyper::{Response, StatusCode};

use super::body::ProxyBody;
use crate::local::html as escape_html;

/// An Apache-style HTML error page for `status`. Everything interpolated is HTML-escaped.
pub fn error_page(status: StatusCode, host: &str, port: u16) -> Response<ProxyBody> {
    // Apache titles its 502 page "Proxy Error" rather than the canonical "Bad Gateway".
    let reason = match status.as_u16() {
        502 => "Proxy Error",
        _ => status.canonical_reason().unwrap_or("Error"),
    };
    let explanation = match status.as_u16() {
        400 => "Your browser sent a request that this server could not understand.",
        403 => "You don't have permission to access this resource.",
        405 => "The requested method is not allowed for this URL.",
        404 => "The requested URL was not found on this server.",
        408 => "Server timeout waiting for the HTTP request from the client.",
        413 => {
            "The requested resource does not allow request data with this method, or the amount of data provided\nin the request exceeds the capacity limit."
        }
        414 => "The requested URL's length exceeds the capacity\nlimit for this server.",
        501 => "The server does not support the functionality required to fulfill the request.",
        500 => {
            "The server encountered an internal error or\nmisconfiguration and was unable to complete\nyour request."
        }
        502 => {
            "The proxy server received an invalid\nresponse from an upstream server.<br />\nThe proxy server could not handle the request<p>Reason: <strong>Error reading from remote server</strong></p>"
        }
        503 => {
            "The server is temporarily unable to service your\nrequest due to maintenance downtime or capacity\nproblems. Please try again later."
        }
        504 => "The gateway did not receive a timely response\nfrom the upstream server or application.",
        _ => "",
    };
    let body = format!(
        "<!DOCTYPE HTML PUBLIC \"-//W3C//DTD HTML 4.01//EN\" \"http://www.w3.org/TR/html4/strict.dtd\">\n<html><head>\n<title>{code} {reason}</title>\n\
         </head><body>\n<h1>{reason}</h1>\n<p>{explanation}</p>\n<hr>\n<address>{server} Server at {host} Port {port}</address>\n\
         </body></html>\n",
        code = status.as_u16(),
        server = super::SERVER,
        host = escape_html(host),
    );
    let mut response = Response::new(ProxyBody::text(body));
    *response.status_mut() = status;
    if status == StatusCode::BAD_GATEWAY {
        // Apache's status line says `502 Proxy Error` too.
        response.extensions_mut().insert(hyper::ext::ReasonPhrase::from_static(b"Proxy Error"));
    }
    response.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("text/html; charset=iso-8859-1"));
    if drops_connection(status) {
        response.headers_mut().insert(hyper::header::CONNECTION, HeaderValue::from_static("close"));
    }
    response
}

/// Apache closes the client connection after these statuses (docs/apache-behaviour.md §7.5: httpd's
/// `ap_status_drops_connection`), whether it generated the response or relayed it.
pub fn drops_connection(status: StatusCode) -> bool {
    matches!(status.as_u16(), 400 | 408 | 411 | 413 | 414 | 417 | 500 | 501 | 503)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_escape_what_they_interpolate() {
        assert_eq!(
            escape_html("<script>alert('x') & \"y\"</script>"),
            "&lt;script&gt;alert(&#39;x&#39;) &amp; &quot;y&quot;&lt;/script&gt;"
        );
        let page = error_page(StatusCode::NOT_FOUND, "<b>x</b>", 80);
        let ProxyBody::Local(body) = page.into_body() else { panic!("a local body") };
        let text = format!("{body:?}");
        assert!(!text.contains("<b>"), "{text}");
    }

    #[test]
    fn bad_gateway_says_proxy_error_in_the_status_line() {
        let page = error_page(StatusCode::BAD_GATEWAY, "h", 80);
        assert_eq!(
            page.extensions().get::<hyper::ext::ReasonPhrase>().map(|r| r.as_bytes()),
            Some(&b"Proxy Error"[..])
        );
    }
}
