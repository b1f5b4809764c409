package sas_test

import (
	"bytes"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"testing"
	"time"

	"github.com/dpsagent/dpsagent/mqtt/sas"
)

// Known answers computed once with OpenSSL 3.0, independently of this
// package, and committed so the test needs no openssl to run:
//
//	G=lRzleB6F54FkWzgmIb9GFtsqdfj75k4bqjWujzVIL3hMXrLiTmvDjOU3xMhysh4bWQYqSMGIH4cBbwBGf0hlxg==
//	echo -n gateway-001 | openssl dgst -sha256 -mac HMAC \
//	    -macopt hexkey:$(echo -n "$G" | base64 -d | xxd -p -c 256) -binary | base64
//	    => katDeviceKey
//	D=$(echo -n "$katDeviceKey" | base64 -d | xxd -p -c 256)
//	printf '0ne00000001%%2Fregistrations%%2Fgateway-001\n1767225600' | openssl dgst -sha256 -mac HMAC -macopt hexkey:$D -binary | base64
//	    => katDPSSig
//	printf '0ne00000001%%2fregistrations%%2fgateway-001\n1767225600' | openssl dgst -sha256 -mac HMAC -macopt hexkey:$D -binary | base64
//	    => katDPSLowerSig (the embedded C SDK's lowercase escapes)
//	printf 'myhub.azure-devices.net%%2Fdevices%%2Fgateway-001\n1767225600' | openssl dgst -sha256 -mac HMAC -macopt hexkey:$D -binary | base64
//	    => katHubSig
const (
	katGroupKey      = "lRzleB6F54FkWzgmIb9GFtsqdfj75k4bqjWujzVIL3hMXrLiTmvDjOU3xMhysh4bWQYqSMGIH4cBbwBGf0hlxg=="
	katRegistration  = "gateway-001"
	katDeviceKey     = "z2ispnuGRVjPfrEzYVn5eDhc05Fpawyu65iZGAhc25Y="
	katExpiry        = 1767225600 // 2026-01-01T00:00:00Z
	katDPSSig        = "QFQTmJZlRai0ZmCW/Ch904OlC0B63NsxzymZiDCOLoo="
	katDPSLowerSig   = "IX3S+wa+hJfPsakKu9tdpwmHG2RDv2DPqnYtKYjrSow="
	katHubSig        = "kIPrMIDu6Wt+qQ9MACA8t9u1e3xGtpMA2VyLui35EG4="
	katScope         = "0ne00000001"
	katHubHost       = "myhub.azure-devices.net"
	katDPSToken      = "SharedAccessSignature sr=0ne00000001%2Fregistrations%2Fgateway-001&sig=QFQTmJZlRai0ZmCW%2FCh904OlC0B63NsxzymZiDCOLoo%3D&se=1767225600&skn=registration"
	katDPSLowerToken = "SharedAccessSignature sr=0ne00000001%2fregistrations%2fgateway-001&sig=IX3S%2Bwa%2BhJfPsakKu9tdpwmHG2RDv2DPqnYtKYjrSow%3D&se=1767225600"
	katHubToken      = "SharedAccessSignature sr=myhub.azure-devices.net%2Fdevices%2Fgateway-001&sig=kIPrMIDu6Wt%2BqQ9MACA8t9u1e3xGtpMA2VyLui35EG4%3D&se=1767225600"
)

func mustDecodeKey(t testing.TB, text string) []byte {
	t.Helper()
	key, err := sas.DecodeKey(text)
	if err != nil {
		t.Fatal(err)
	}
	return key
}

func TestDeriveDeviceKeyKnownAnswer(t *testing.T) {
	got := sas.EncodeKey(sas.DeriveDeviceKey(mustDecodeKey(t, katGroupKey), katRegistration))
	if got != katDeviceKey {
		t.Fatalf("device key of %s = %s, openssl says %s", katRegistration, got, katDeviceKey)
	}
}

func TestSignKnownAnswer(t *testing.T) {
	key := mustDecodeKey(t, katDeviceKey)
	expiry := time.Unix(katExpiry, 0)
	for _, tc := range []struct {
		name, got, want string
	}{
		{"dps", sas.Sign(sas.DPSResource(katScope, katRegistration), key, sas.KeyNameRegistration, expiry), katDPSToken},
		{"hub", sas.Sign(sas.HubResource(katHubHost, katRegistration), key, "", expiry), katHubToken},
	} {
		if tc.got != tc.want {
			t.Errorf("%s token:\n got %s\nwant %s", tc.name, tc.got, tc.want)
		}
	}
}

// The service accepts the embedded C SDK's lowercase escapes and the other
// SDKs' uppercase ones; so must Verify, on tokens nobody here produced.
func TestVerifyKnownAnswerTokens(t *testing.T) {
	keys := [][]byte{mustDecodeKey(t, katDeviceKey)}
	now := time.Unix(katExpiry, 0).Add(-time.Hour)
	for _, tc := range []struct {
		name, token, resource, sig string
	}{
		{"dps uppercase escapes", katDPSToken, sas.DPSResource(katScope, katRegistration), katDPSSig},
		{"dps lowercase escapes, no skn", katDPSLowerToken, sas.DPSResource(katScope, katRegistration), katDPSLowerSig},
		{"hub", katHubToken, sas.HubResource(katHubHost, katRegistration), katHubSig},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tok, err := sas.Parse(tc.token)
			if err != nil {
				t.Fatal(err)
			}
			if got := sas.EncodeKey(tok.Signature()); got != tc.sig {
				t.Errorf("signature %s, want %s", got, tc.sig)
			}
			if err := sas.Verify(tok, tc.resource, keys, now); err != nil {
				t.Errorf("Verify: %v", err)
			}
		})
	}
}

// TestAgainstOpenSSL recomputes the HMACs with the openssl found on this
// machine, for inputs the committed constants do not cover.
func TestAgainstOpenSSL(t *testing.T) {
	key := []byte("\x00\x01\xfe\xff arbitrary key bytes, not base64 text")
	t.Run("derive", func(t *testing.T) {
		for _, regID := range []string{"gateway-001", "a", "Sn-007.888_abc:d"} {
			if got, want := sas.DeriveDeviceKey(key, regID), opensslHMAC(t, key, regID); !bytes.Equal(got, want) {
				t.Errorf("DeriveDeviceKey(%q) = %x, openssl says %x", regID, got, want)
			}
		}
	})
	t.Run("sign", func(t *testing.T) {
		expiry := time.Date(2031, 5, 6, 7, 8, 9, 0, time.UTC)
		tok, err := sas.Parse(sas.Sign("scope-x/registrations/dev:1", key, "", expiry))
		if err != nil {
			t.Fatal(err)
		}
		// Written out by hand: ':' and '/' escaped in upper case.
		toSign := fmt.Sprintf("scope-x%%2Fregistrations%%2Fdev%%3A1\n%d", expiry.Unix())
		if want := opensslHMAC(t, key, toSign); !bytes.Equal(tok.Signature(), want) {
			t.Errorf("signature %x, openssl says %x", tok.Signature(), want)
		}
	})
}

// opensslHMAC runs openssl for HMAC-SHA256(key, msg). Without openssl the
// test is skipped, except in CI where its absence is a broken runner.
func opensslHMAC(t *testing.T, key []byte, msg string) []byte {
	t.Helper()
	path, err := exec.LookPath("openssl")
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("openssl is required in CI: %v", err)
		}
		t.Skipf("openssl not installed: %v", err)
	}
	cmd := exec.Command(path, "dgst", "-sha256", "-mac", "HMAC", "-macopt", "hexkey:"+hex.EncodeToString(key), "-binary")
	cmd.Stdin = bytes.NewBufferString(msg)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("openssl dgst: %v: %s", err, stderr.String())
	}
	return out
}
