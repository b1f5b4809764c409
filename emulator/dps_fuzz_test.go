package emulator

import (
	"encoding/json"
	"strings"
	"testing"
	"time"
	"unicode/utf8"
)

// Every request topic either parses into something whose answer topic is a
// valid MQTT topic name that carries the same $rid, or is refused.
func FuzzDPSRequestTopic(f *testing.F) {
	for _, s := range []string{
		"$dps/registrations/PUT/iotdps-register/?$rid=1",
		"$dps/registrations/GET/iotdps-get-operationstatus/?$rid=2&operationId=4.abc.d-e",
		"$dps/registrations/GET/iotdps-get-operationstatus/?operationId=%zz&$rid=x%2Fy",
		"$dps/registrations/PUT/iotdps-register/?$rid=&$rid=2",
		"$dps/registrations/res/#",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, topic string) {
		req, err := parseDPSRequestTopic(topic)
		if err != nil {
			return
		}
		if req.Kind != dpsRegister && req.Kind != dpsPoll {
			t.Fatalf("%q parsed as kind %d", topic, req.Kind)
		}
		if req.Kind == dpsRegister && req.OperationID != "" {
			t.Fatalf("%q: a register request with an operation ID", topic)
		}
		answer := dpsResponseTopic(202, req.RequestID, 3)
		if strings.ContainsAny(answer, "+#\x00") || answer == "" {
			t.Fatalf("%q: answer topic %q is not a valid topic name", topic, answer)
		}
		if utf8.ValidString(topic) && !utf8.ValidString(answer) {
			t.Fatalf("%q: answer topic %q is not UTF-8", topic, answer)
		}
		if got, ok := dpsQueryValue(strings.SplitN(answer, "?", 2)[1], dpsRequestIDParam); !ok || got != req.RequestID {
			t.Fatalf("%q: answer %q carries $rid %q, want %q", topic, answer, got, req.RequestID)
		}
	})
}

func FuzzDPSUsername(f *testing.F) {
	for _, s := range []string{
		"0ne00000001/registrations/dev/api-version=2019-03-31",
		"0ne00000001/registrations/dev/api-version=2025-07-01-preview&ClientVersion=a%2Fb",
		"s/registrations/d/?api-version=2021-06-01&ClientVersion=%",
		"s/registrations//api-version=2019-03-31",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		u, err := parseDPSUsername(s)
		if err != nil {
			return
		}
		if !strings.HasPrefix(s, u.IDScope+"/registrations/"+u.RegistrationID+"/") {
			t.Fatalf("%q parsed as scope %q, registration %q", s, u.IDScope, u.RegistrationID)
		}
		again, err := parseDPSAPIVersion(u.APIVersion.String())
		if err != nil || again != u.APIVersion {
			t.Fatalf("%q: api-version %s does not round-trip: %v", s, u.APIVersion, err)
		}
	})
}

// A register body is refused with a 400-family code or parsed into fields
// whose payload, if any, is JSON the answer can embed.
func FuzzDPSRegisterBody(f *testing.F) {
	for _, s := range []string{
		``, `{}`, `{"registrationId":"d","csr":"QUJD","payload":{"a":[1,2]}}`, `{"payload":null}`, `[1]`, `{"csr":1}`, `{"registrationId":"d"`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		got, derr := parseDPSRegisterBody(body)
		if derr != nil {
			if derr.status() != 400 {
				t.Fatalf("%q: refused with %d", body, derr.code)
			}
			if !json.Valid(derr.body(time.Time{})) {
				t.Fatalf("%q: error body is not JSON", body)
			}
			return
		}
		if got.Payload != nil && !json.Valid(got.Payload) {
			t.Fatalf("%q: payload %q is not JSON", body, got.Payload)
		}
		answer := dpsJSON(dpsOperationStatus{OperationID: "4.x", Status: dpsStatusAssigned,
			RegistrationState: &dpsRegistrationResult{RegistrationID: "d", Status: dpsStatusAssigned, Payload: got.Payload}})
		if !json.Valid(answer) {
			t.Fatalf("%q: answer %q is not JSON", body, answer)
		}
	})
}
