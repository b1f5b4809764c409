package sas

import (
	"crypto/subtle"
	"errors"
	"fmt"
	"strings"
	"time"
)

// The reasons a token is refused, for errors.Is. The emulator maps them to
// its 401 answers; every error from Parse and Verify wraps exactly one.
var (
	ErrMalformed     = errors.New("malformed shared access signature")
	ErrExpired       = errors.New("shared access signature expired")
	ErrWrongResource = errors.New("shared access signature is for another resource")
	ErrBadSignature  = errors.New("shared access signature does not match the key")
)

// ClockSkew is how long after its se the service still accepts a token.
// Microsoft's service-side token code allows five minutes, so devices with a
// slightly slow clock are not locked out; the emulator allows the same.
const ClockSkew = 5 * time.Minute

// Verify checks tok as the service does before it lets a device in: not
// expired at now (allowing ClockSkew), issued for expectedResource (compared
// case-insensitively and ignoring a trailing '/', after URL-decoding), and
// signed with one of keys (the decoded primary and secondary keys; empty
// entries are skipped). It does not look at skn: whether a key name belongs
// on the token is the caller's rule.
func Verify(tok Token, expectedResource string, keys [][]byte, now time.Time) error {
	if tok.encodedResource == "" || tok.signature == nil {
		return fmt.Errorf("verify token: %w: not a parsed token", ErrMalformed)
	}
	if now.After(tok.expiry.Add(ClockSkew)) {
		return fmt.Errorf("verify token for %q: %w at %s (now %s)", tok.resource, ErrExpired,
			tok.expiry.UTC().Format(time.RFC3339), now.UTC().Format(time.RFC3339))
	}
	if !sameResource(tok.resource, expectedResource) {
		return fmt.Errorf("verify token: %w: signed for %q, expected %q", ErrWrongResource, tok.resource, expectedResource)
	}
	// Every key is tried even after a match, so the time taken does not
	// tell which key (or whether an early one) matched.
	matched, tried := 0, 0
	for _, key := range keys {
		if len(key) == 0 {
			continue
		}
		tried++
		matched |= subtle.ConstantTimeCompare(tok.sign(key), tok.signature)
	}
	if tried == 0 {
		return fmt.Errorf("verify token for %q: no key to check it with", tok.resource)
	}
	if matched != 1 {
		return fmt.Errorf("verify token for %q: %w", tok.resource, ErrBadSignature)
	}
	return nil
}

func sameResource(got, want string) bool {
	return strings.EqualFold(strings.TrimRight(got, "/"), strings.TrimRight(want, "/"))
}
