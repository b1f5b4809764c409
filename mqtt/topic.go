package mqtt

import (
	"errors"
	"fmt"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// Query parameter names Azure puts on response topics.
const (
	ParamRequestID  = "$rid"
	ParamRetryAfter = "retry-after"
	ParamVersion    = "$version"
)

// Topic is a topic an Azure service published to, split at its first '?'
// into the path and the query parameters. Parameters are read by name: the
// services and SDKs differ in their order and add new ones over time.
type Topic struct {
	Path  string
	Query url.Values
}

// ErrMalformedTopic is wrapped by every error of ParseTopic and of Topic's
// accessors.
var ErrMalformedTopic = errors.New("malformed topic")

// ParseTopic splits topic into path and query. The query is a list of
// name=value pairs separated by '&'; names and values are percent-decoded,
// while '+' and ';' stay as they are (Azure writes a space as %20, and a '+'
// is a plus sign to it). A pair without '=' has an empty value. A bad escape,
// or one of $rid, retry-after and $version given twice, is an error.
func ParseTopic(topic string) (Topic, error) {
	path, rawQuery, _ := strings.Cut(topic, "?")
	q := url.Values{}
	for field := range strings.SplitSeq(rawQuery, "&") {
		if field == "" {
			continue
		}
		rawName, rawValue, _ := strings.Cut(field, "=")
		name, err := url.PathUnescape(rawName)
		if err != nil {
			return Topic{}, fmt.Errorf("%w: query parameter %q: %w", ErrMalformedTopic, clip(rawName), err)
		}
		value, err := url.PathUnescape(rawValue)
		if err != nil {
			return Topic{}, fmt.Errorf("%w: query parameter %q: %w", ErrMalformedTopic, clip(name), err)
		}
		q[name] = append(q[name], value)
	}
	// These would be ambiguous if given twice: refuse rather than guess.
	for _, name := range []string{ParamRequestID, ParamRetryAfter, ParamVersion} {
		if len(q[name]) > 1 {
			return Topic{}, fmt.Errorf("%w: %s appears %d times", ErrMalformedTopic, name, len(q[name]))
		}
	}
	return Topic{Path: path, Query: q}, nil
}

// RequestID is the $rid parameter; ok is false when the topic has none.
func (t Topic) RequestID() (rid string, ok bool) {
	return t.get(ParamRequestID)
}

// maxRetryAfterSeconds bounds retry-after so the duration cannot overflow;
// about 136 years, far beyond anything a caller would wait.
const maxRetryAfterSeconds = 1<<32 - 1

// RetryAfter is the retry-after parameter, in whole seconds as Azure sends
// it; ok is false when it is absent. A value that is not a non-negative
// integer is an error, so a caller can fall back to its default knowingly.
func (t Topic) RetryAfter() (d time.Duration, ok bool, err error) {
	v, ok := t.get(ParamRetryAfter)
	if !ok {
		return 0, false, nil
	}
	secs, err := strconv.ParseUint(v, 10, 32)
	if err != nil || secs > maxRetryAfterSeconds {
		return 0, true, fmt.Errorf("%w: retry-after %q is not a whole number of seconds", ErrMalformedTopic, clip(v))
	}
	return time.Duration(secs) * time.Second, true, nil
}

// Version is the $version parameter (twin responses and desired-property
// patches); ok is false when it is absent.
func (t Topic) Version() (version int64, ok bool, err error) {
	v, ok := t.get(ParamVersion)
	if !ok {
		return 0, false, nil
	}
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil || n < 0 {
		return 0, true, fmt.Errorf("%w: $version %q is not a non-negative integer", ErrMalformedTopic, clip(v))
	}
	return n, true, nil
}

// Status reads the response status that follows prefix in the path, as in
// "$dps/registrations/res/202/" (prefix "$dps/registrations/res/") or
// "$iothub/twin/res/204/". The status must be a three-digit number followed
// by '/' or the end of the path.
func (t Topic) Status(prefix string) (int, error) {
	rest, ok := strings.CutPrefix(t.Path, prefix)
	if !ok {
		return 0, fmt.Errorf("%w: %q does not start with %q", ErrMalformedTopic, clip(t.Path), prefix)
	}
	status, tail, _ := strings.Cut(rest, "/")
	if tail != "" {
		return 0, fmt.Errorf("%w: unexpected %q after the status", ErrMalformedTopic, clip(tail))
	}
	if len(status) != 3 || strings.ContainsFunc(status, func(r rune) bool { return r < '0' || r > '9' }) {
		return 0, fmt.Errorf("%w: status %q is not a three-digit number", ErrMalformedTopic, clip(status))
	}
	n, _ := strconv.Atoi(status)
	if n < 100 {
		return 0, fmt.Errorf("%w: status %d is out of range", ErrMalformedTopic, n)
	}
	return n, nil
}

func (t Topic) get(name string) (string, bool) {
	vs, ok := t.Query[name]
	if !ok || len(vs) == 0 {
		return "", false
	}
	return vs[0], true
}

// clip keeps error messages short when a hostile server sends long values.
func clip(s string) string {
	const maxLen = 64
	if len(s) > maxLen {
		return s[:maxLen] + "..."
	}
	return s
}
