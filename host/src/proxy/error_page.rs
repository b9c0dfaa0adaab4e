//! Fulcrum's own error responses, shaped like Apache's (same HTML, same headers).

use hyper::header::{CONTENT_TYPE, HeaderValue};
use hyper::{Response, StatusCode};

use super::body::ProxyBody;

/// An Apache-style HTML error page for `status`.
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
    );
    let mut response = Response::new(ProxyBody::text(body));
    *response.status_mut() = status;
    response.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("text/html; charset=iso-8859-1"));
    if drops_connection(status) {
        response.headers_mut().insert(hyper::header::CONNECTION, HeaderValue::from_static("close"));
    }
    response
}

/// Apache closes the client connection after these statuses (BEHAVIOUR §7.5: httpd's
/// `ap_status_drops_connection`), whether it generated the response or relayed it.
pub fn drops_connection(status: StatusCode) -> bool {
    matches!(status.as_u16(), 400 | 408 | 411 | 413 | 414 | 417 | 500 | 501 | 503)
}
