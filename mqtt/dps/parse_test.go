package dps

import (
	"encoding/base64"
	"errors"
	"strings"
	"testing"
	"time"
)

func TestParseResponseTopic(t *testing.T) {
	tests := []struct {
		topic string
		want  responseTopic
		bad   bool
	}{
		{"$dps/registrations/res/202/?$rid=1&retry-after=3", responseTopic{status: 202, rid: "1", retryAfter: 3 * time.Second, hasRetryAfter: true}, false},
		{"$dps/registrations/res/202/?retry-after=3&$rid=1", responseTopic{status: 202, rid: "1", retryAfter: 3 * time.Second, hasRetryAfter: true}, false},
		{"$dps/registrations/res/200/?$rid=17", responseTopic{status: 200, rid: "17"}, false},
		{"$dps/registrations/res/429/?$rid=x&retry-after=soon", responseTopic{status: 429, rid: "x", badRetryAfter: "soon"}, false},
		{"$dps/registrations/res/401/?foo=1&$rid=2&bar", responseTopic{status: 401, rid: "2"}, false},
		{"$dps/registrations/res/200/", responseTopic{}, true},                    // no $rid
		{"$dps/registrations/res/200/?$rid=", responseTopic{}, true},              // empty $rid
		{"$dps/registrations/res/2x0/?$rid=1", responseTopic{}, true},             // bad status
		{"$iothub/twin/res/200/?$rid=1", responseTopic{}, true},                   // another service
		{"$dps/registrations/res/200/?$rid=1&$rid=2", responseTopic{}, true},      // ambiguous
		{"$dps/registrations/res/200/more/?$rid=1", responseTopic{}, true},        // extra level
		{"$dps/registrations/res/200/?$rid=%", responseTopic{}, true},             // bad escape
		{"$dps/registrations/PUT/iotdps-register/?$rid=1", responseTopic{}, true}, // a request, not a response
	}
	for _, tt := range tests {
		got, err := parseResponseTopic(tt.topic)
		if tt.bad {
			if !errors.Is(err, errMalformed) {
				t.Errorf("%s: error %v, want errMalformed", tt.topic, err)
			}
			continue
		}
		if err != nil || got != tt.want {
			t.Errorf("%s: %+v, %v; want %+v", tt.topic, got, err, tt.want)
		}
	}
}

func TestParseOperationStatus(t *testing.T) {
	tests := []struct {
		name string
		body string
		ok   bool
	}{
		{"minimal 202", `{"operationId":"op","status":"assigning"}`, true},
		{"unknown fields", `{"operationId":"op","status":"assigning","new":{"a":[1,2]},"registrationState":{"x509":{"enrollmentGroupId":"g"},"connectionProfile":"mqttV5"}}`, true},
		{"null state", `{"operationId":"op","status":"assigning","registrationState":null}`, true},
		{"leading space", "  \n{\"operationId\":\"op\"}", true},
		{"status a number", `{"operationId":"op","status":1}`, false},
		{"state a string", `{"operationId":"op","registrationState":"assigned"}`, false},
		{"errorCode a string", `{"registrationState":{"errorCode":"400"}}`, false},
		{"chain not strings", `{"registrationState":{"issuedCertificateChain":[1]}}`, false},
		{"chain too long", `{"registrationState":{"issuedCertificateChain":["a","a","a","a","a","a","a","a","a"]}}`, false},
		{"array", `[]`, false},
		{"empty", ``, false},
		{"null", `null`, false},
		{"trailing garbage", `{"operationId":"op"} x`, false},
		{"too big", `{"operationId":"` + strings.Repeat("a", maxBody) + `"}`, false},
		{"operation ID too long", `{"operationId":"` + strings.Repeat("a", maxOperationIDLen+1) + `"}`, false},
	}
	for _, tt := range tests {
		_, err := parseOperationStatus([]byte(tt.body))
		if (err == nil) != tt.ok {
			t.Errorf("%s: error %v, want ok=%v", tt.name, err, tt.ok)
		}
		if err != nil && !errors.Is(err, errMalformed) {
			t.Errorf("%s: error %v does not wrap errMalformed", tt.name, err)
		}
	}
}

func TestOperationStatusResult(t *testing.T) {
	b64 := base64.StdEncoding.EncodeToString
	st := func(body string) operationStatus {
		s, err := parseOperationStatus([]byte(body))
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	// The order received is kept, even when it is not leaf first.
	res, err := st(`{"operationId":"op","status":"assigned","registrationState":{"registrationId":"GW-001","assignedHub":"h","deviceId":"d",` +
		`"createdDateTimeUtc":"2026-05-01T10:00:00.1234567","lastUpdatedDateTimeUtc":"yesterday","payload":null,` +
		`"issuedCertificateChain":["` + b64([]byte("root")) + `","` + b64([]byte("leaf")) + `"]}}`).result("gw-001")
	if err != nil {
		t.Fatal(err)
	}
	if len(res.IssuedCertificateChain) != 2 || string(res.IssuedCertificateChain[0]) != "root" || string(res.IssuedCertificateChain[1]) != "leaf" {
		t.Errorf("chain %q, want the order received", res.IssuedCertificateChain)
	}
	if !res.CreatedAt.Equal(time.Date(2026, 5, 1, 10, 0, 0, 123456700, time.UTC)) || !res.LastUpdatedAt.IsZero() || res.Payload != nil {
		t.Errorf("times %v, %v, payload %s: want the zone-less time as UTC, the bad one zero, no payload", res.CreatedAt, res.LastUpdatedAt, res.Payload)
	}
	for name, body := range map[string]string{
		"no state":          `{"status":"assigned"}`,
		"no device":         `{"status":"assigned","registrationState":{"assignedHub":"h"}}`,
		"other device":      `{"status":"assigned","registrationState":{"registrationId":"gw-002","assignedHub":"h","deviceId":"d"}}`,
		"chain not base64":  `{"status":"assigned","registrationState":{"assignedHub":"h","deviceId":"d","issuedCertificateChain":["***"]}}`,
		"chain entry empty": `{"status":"assigned","registrationState":{"assignedHub":"h","deviceId":"d","issuedCertificateChain":[""]}}`,
	} {
		if _, err := st(body).result("gw-001"); !errors.Is(err, errMalformed) {
			t.Errorf("%s: error %v, want errMalformed", name, err)
		}
	}
}

func TestParseErrorBody(t *testing.T) {
	e, err := parseErrorBody([]byte(`{"errorCode":401002,"trackingId":"t","message":"Invalid certificate.","timestampUtc":"2026-01-01T00:00:00Z","info":{"a":1}}`))
	if err != nil || e != (errorBody{ErrorCode: 401002, TrackingID: "t", Message: "Invalid certificate."}) {
		t.Errorf("got %+v, %v", e, err)
	}
	if e, err := parseErrorBody([]byte(" \n")); err != nil || e != (errorBody{}) {
		t.Errorf("empty body: %+v, %v", e, err)
	}
	for _, body := range []string{`{"errorCode":"401002"}`, `{"errorCode":4.5}`, `nope`, `{"message":["x"]}`} {
		if _, err := parseErrorBody([]byte(body)); !errors.Is(err, errMalformed) {
			t.Errorf("%s: error %v, want errMalformed", body, err)
		}
	}
}

func TestCleanText(t *testing.T) {
	if got := cleanText("  line1\nline2\x1b[31m\xff "); got != "line1 line2 [31m?" {
		t.Errorf("cleanText = %q", got)
	}
	if got := cleanText(strings.Repeat("a", 2000)); len(got) > maxMessageLen+3 {
		t.Errorf("cleanText kept %d bytes", len(got))
	}
}

func TestRegisterBody(t *testing.T) {
	tests := []struct {
		name    string
		csr     []byte
		payload string
		want    string
		bad     bool
	}{
		{"id only", nil, "", `{"registrationId":"gw-001"}`, false},
		{"all", []byte{0x30, 0x01, 0xfe}, `{"a":1}`, `{"registrationId":"gw-001","payload":{"a":1},"csr":"MAH+"}`, false},
		{"csr only", []byte{0x30, 0x00}, "", `{"registrationId":"gw-001","csr":"MAA="}`, false},
		{"payload not JSON", nil, `{"a":`, "", true},
		{"PEM CSR", []byte("-----BEGIN CERTIFICATE REQUEST-----"), "", "", true},
		{"CSR too big", make([]byte, maxCSR+1), "", "", true},
		{"payload too big", nil, `"` + strings.Repeat("a", maxBody) + `"`, "", true},
	}
	for _, tt := range tests {
		got, err := registerBody("gw-001", tt.csr, []byte(tt.payload))
		if (err != nil) != tt.bad || string(got) != tt.want {
			t.Errorf("%s: %s, %v; want %s (error %v)", tt.name, got, err, tt.want, tt.bad)
		}
	}
}
