// Package redact keeps credentials that travel inside URLs (nats://user:password@host,
// nats://token@host, https://user:password@host) out of log lines and error messages. Every place
// that logs a configured URL or returns an error that may quote one goes through it.
package redact

import (
	"net/url"
	"strings"
)

// Mask replaces the user-info part of a URL.
const Mask = "redacted"

// URL returns s, one URL or a comma-separated list of them, with the user-info part of every URL
// (user name, password or token: whatever precedes the last '@' of the authority) and the value of
// every query parameter (?token=...) replaced by Mask. It never fails: text it cannot parse is
// redacted by position, so a malformed URL with a password is still masked.
func URL(s string) string {
	if !strings.ContainsAny(s, "@?") {
		return s
	}
	parts := strings.Split(s, ",")
	for i, p := range parts {
		parts[i] = one(p)
	}
	return strings.Join(parts, ",")
}

func one(p string) string {
	if q := strings.IndexByte(p, '?'); q >= 0 {
		p = p[:q+1] + maskQuery(p[q+1:])
	}
	start := 0
	if i := strings.Index(p, "://"); i >= 0 {
		start = i + len("://")
	}
	at := strings.LastIndex(p[start:], "@")
	if at < 0 {
		return p
	}
	// Over-masking a path with an '@' is harmless; leaving a password visible is not.
	return p[:start] + Mask + p[start+at:]
}

// maskQuery masks the value of every parameter of a query (a fragment after it too): the names
// say what the URL is for, the values may be tokens.
func maskQuery(q string) string {
	q, _, _ = strings.Cut(q, "#")
	params := strings.Split(q, "&")
	for i, kv := range params {
		if k, _, ok := strings.Cut(kv, "="); ok {
			params[i] = k + "=" + Mask
		}
	}
	return strings.Join(params, "&")
}

// Secrets are the strings of a URL list that must never be shown: every user-info part, raw and
// percent-decoded, and its password or token alone.
func Secrets(urls string) []string {
	var out []string
	add := func(s string) {
		if s != "" && s != Mask {
			out = append(out, s)
		}
	}
	for p := range strings.SplitSeq(urls, ",") {
		start := 0
		if i := strings.Index(p, "://"); i >= 0 {
			start = i + len("://")
		}
		at := strings.LastIndex(p[start:], "@")
		if at < 0 {
			continue
		}
		info := p[start : start+at]
		add(info)
		if dec, err := url.PathUnescape(info); err == nil {
			add(dec)
		}
		user, pass, hasPass := strings.Cut(info, ":")
		secret := user // a lone user-info part is a token
		if hasPass {
			secret = pass
		}
		add(secret)
		if dec, err := url.PathUnescape(secret); err == nil {
			add(dec)
		}
		if u, err := url.Parse(strings.TrimSpace(p)); err == nil && u.User != nil {
			if pw, ok := u.User.Password(); ok {
				add(pw)
			} else {
				add(u.User.Username())
			}
		}
	}
	return out
}

// String masks every secret of urls (see Secrets) in s, and every URL of urls by its URL form.
func String(s, urls string) string {
	for u := range strings.SplitSeq(urls, ",") {
		if strings.Contains(u, "@") {
			s = strings.ReplaceAll(s, u, one(u))
		}
	}
	for _, sec := range Secrets(urls) {
		s = strings.ReplaceAll(s, sec, Mask)
	}
	return s
}

// Error returns err with every secret of urls masked in its message (String). errors.Is and
// errors.As still see the original error; only its text is replaced. A nil err stays nil, and an
// error whose text holds no secret is returned as it is.
func Error(err error, urls string) error {
	if err == nil {
		return nil
	}
	msg := err.Error()
	clean := String(msg, urls)
	if clean == msg {
		return err
	}
	return &maskedError{msg: clean, err: err}
}

type maskedError struct {
	msg string
	err error
}

func (e *maskedError) Error() string { return e.msg }

// Unwrap lets callers classify the error; it hands out the original, so code that prints an
// unwrapped error must redact it again.
func (e *maskedError) Unwrap() error { return e.err }
