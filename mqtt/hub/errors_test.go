package hub

import (
	"errors"
	"fmt"
	"strings"
	"testing"
)

func TestErrorRetryableAndHint(t *testing.T) {
	for _, tc := range []struct {
		status, code int
		retryable    bool
		hint         string
	}{
		{400, 400004, false, "invalid"},
		{400, 400040, false, "could not be decoded"},
		{400, 400037, false, "new CSR"},
		{400, 0, false, "will not succeed if repeated"},
		{409, 409005, false, "replace"},
		{409, 409004, false, "another certificate operation"},
		{412, 412001, false, "fresh request"},
		{429, 429002, true, "throttling"},
		{500, 500001, true, "internal error"},
		{503, 503001, true, "unavailable"},
		{404, 0, false, "api-version"},
	} {
		e := &Error{Op: "issueCertificate", Status: tc.status, Code: tc.code}
		if e.Retryable() != tc.retryable {
			t.Errorf("%d/%d: Retryable = %v, want %v", tc.status, tc.code, e.Retryable(), tc.retryable)
		}
		if !strings.Contains(e.Hint(), tc.hint) || !strings.Contains(e.Error(), e.Hint()) {
			t.Errorf("%d/%d: hint %q should mention %q and be part of the message %q", tc.status, tc.code, e.Hint(), tc.hint, e.Error())
		}
	}
	e := &Error{Op: "issueCertificate", Status: 429, RetryAfter: 5e9}
	if !strings.Contains(e.Hint(), "retry after 5s") {
		t.Errorf("429 hint %q does not pass on the hub's retry-after", e.Hint())
	}
}

func TestConnectErrorClassification(t *testing.T) {
	for _, tc := range []struct {
		code                    byte
		err                     error
		unauthorized, retryable bool
	}{
		{0, fmt.Errorf("%w: dial tcp: connection refused", ErrNetwork), false, true},
		{0, errors.New("get the device certificate: TPM busy"), false, true},
		{connackProtocol, nil, false, false},
		{connackIdentifier, nil, false, false},
		{connackUnavailable, nil, false, true},
		{connackBadUserPass, nil, true, false},
		{connackUnauthorized, nil, true, false},
	} {
		var err error = &ConnectError{Host: "h", Code: tc.code, Err: tc.err}
		wrapped := fmt.Errorf("agent: %w", err)
		if errors.Is(wrapped, ErrUnauthorized) != tc.unauthorized {
			t.Errorf("code %d: errors.Is(ErrUnauthorized) = %v, want %v", tc.code, !tc.unauthorized, tc.unauthorized)
		}
		if retryable(wrapped) != tc.retryable {
			t.Errorf("code %d: retryable = %v, want %v", tc.code, !tc.retryable, tc.retryable)
		}
		if errors.Is(wrapped, ErrNetwork) != errors.Is(tc.err, ErrNetwork) {
			t.Errorf("code %d: network failures must stay distinguishable", tc.code)
		}
	}
	e := &ConnectError{Host: "h", Code: connackUnauthorized}
	if !strings.Contains(e.Error(), "DPS") {
		t.Errorf("an unauthorized connect error should send the user to DPS: %q", e.Error())
	}
}
