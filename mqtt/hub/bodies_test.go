package hub

import (
	"bytes"
	"encoding/base64"
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"
)

func TestParseTwin(t *testing.T) {
	body := []byte(`{"desired":{"interval":30,"nested":{"a":true},"$version":5},"reported":{"fw":"1.0","$version":12}}`)
	doc, err := parseTwin(body)
	if err != nil {
		t.Fatal(err)
	}
	if doc.desiredVersion != 5 || doc.reportedVersion != 12 {
		t.Errorf("versions = %d, %d; want 5, 12", doc.desiredVersion, doc.reportedVersion)
	}
	if want := map[string]any{"interval": 30.0, "nested": map[string]any{"a": true}}; !reflect.DeepEqual(doc.desired, want) {
		t.Errorf("desired = %v, want %v (without $version)", doc.desired, want)
	}
	if want := map[string]any{"fw": "1.0"}; !reflect.DeepEqual(doc.reported, want) {
		t.Errorf("reported = %v, want %v", doc.reported, want)
	}

	for _, bad := range []string{
		``, `null`, `[]`, `"x"`, `{`, `{"desired":{"$version":1}}`,
		`{"desired":{"$version":1},"reported":null}`,
		`{"desired":{"$version":"1"},"reported":{"$version":1}}`,
		`{"desired":{"$version":1.5},"reported":{"$version":1}}`,
		`{"desired":{"$version":-1},"reported":{"$version":1}}`,
		`{"desired":{"$version":1e300},"reported":{"$version":1}}`,
		`{"desired":{"x":1},"reported":{"$version":1}}`,
		`{"desired":[1],"reported":{"$version":1}}`,
		`{"desired":{"$version":1},"reported":{"$version":1}}garbage`,
	} {
		if _, err := parseTwin([]byte(bad)); !errors.Is(err, ErrBadAnswer) {
			t.Errorf("parseTwin(%q) error = %v, want a malformed-answer error", bad, err)
		}
	}
	huge := append([]byte(`{"desired":{"$version":1,"x":"`), bytes.Repeat([]byte("a"), maxBody)...)
	if _, err := parseTwin(append(huge, `"},"reported":{"$version":1}}`...)); !errors.Is(err, ErrBadAnswer) {
		t.Errorf("an oversized twin was not refused: %v", err)
	}
}

func TestParseDesiredPatch(t *testing.T) {
	for _, tc := range []struct {
		body      string
		topicV    int
		haveTopic bool
		want      map[string]any
		version   int
		wantErr   bool
	}{
		{`{"interval":60,"$version":7}`, 0, false, map[string]any{"interval": 60.0}, 7, false},
		{`{"interval":60,"$version":7}`, 6, true, map[string]any{"interval": 60.0}, 7, false}, // the body wins
		{`{"interval":null}`, 8, true, map[string]any{"interval": nil}, 8, false},
		{`{"interval":60}`, 0, false, nil, 0, true},
		{`{"$version":"7"}`, 7, true, nil, 0, true},
		{`[]`, 1, true, nil, 0, true},
		{`nonsense`, 1, true, nil, 0, true},
	} {
		got, v, err := parseDesiredPatch([]byte(tc.body), tc.topicV, tc.haveTopic)
		if (err != nil) != tc.wantErr || v != tc.version || (!tc.wantErr && !reflect.DeepEqual(got, tc.want)) {
			t.Errorf("parseDesiredPatch(%s) = %v, %d, %v; want %v, %d, error %v", tc.body, got, v, err, tc.want, tc.version, tc.wantErr)
		}
	}
}

func TestParseAccepted(t *testing.T) {
	a, err := parseAccepted([]byte(`{"correlationId":"c-1","operationExpires":"2026-03-01T10:00:00.123Z"}`))
	if err != nil {
		t.Fatal(err)
	}
	if a.correlationID != "c-1" || !a.expires.Equal(time.Date(2026, 3, 1, 10, 0, 0, 123e6, time.UTC)) {
		t.Errorf("parseAccepted = %+v", a)
	}
	// A 202 whose fields have the wrong types still counts as accepted,
	// with what could be read.
	a, err = parseAccepted([]byte(`{"correlationId":5,"operationExpires":"tomorrow"}`))
	if err != nil || a.correlationID != "" || !a.expires.IsZero() {
		t.Errorf("lenient parseAccepted = %+v, %v", a, err)
	}
	if _, err := parseAccepted([]byte(`["x"]`)); err == nil {
		t.Error("a 202 that is not an object was accepted")
	}
}

func TestParseIssuedBothForms(t *testing.T) {
	leaf, ica, root := []byte{0x30, 1, 2}, []byte{0x30, 3}, []byte{0x30, 4, 5, 6}
	b64 := func(b []byte) string { return base64.StdEncoding.EncodeToString(b) }
	want := [][]byte{leaf, ica, root}
	for name, body := range map[string]string{
		"object (C#, C SDK)":           `{"correlationId":"c","certificates":["` + b64(leaf) + `","` + b64(ica) + `","` + b64(root) + `"]}`,
		"bare array (azure-sdk-for-c)": `["` + b64(leaf) + `","` + b64(ica) + `","` + b64(root) + `"]`,
		"array with white space":       " \n[ \"" + b64(leaf) + "\", \"" + b64(ica) + "\" , \"" + b64(root) + "\" ]\n",
		"object with extra fields":     `{"certificates":["` + b64(leaf) + `","` + b64(ica) + `","` + b64(root) + `"],"x":{"y":[1]}}`,
	} {
		got, err := parseIssued([]byte(body))
		if err != nil || !reflect.DeepEqual(got, want) {
			t.Errorf("%s: parseIssued = %v, %v; want %v", name, got, err, want)
		}
	}
	for _, bad := range []string{
		``, `null`, `{}`, `[]`, `{"certificates":[]}`, `{"certificates":"MA=="}`, `[1,2]`, `["not base64!"]`, `[""]`,
		`{"certificates":[null]}`, `[` + strings.Repeat(`"MA==",`, maxChainLen) + `"MA=="]`, `{"certificates":["MA=="]`,
	} {
		if _, err := parseIssued([]byte(bad)); !errors.Is(err, ErrBadAnswer) {
			t.Errorf("parseIssued(%q) error = %v, want a malformed-answer error", bad, err)
		}
	}
}

func TestParseErrorBody(t *testing.T) {
	body := `{"errorCode":409005,"message":"An active operation exists","trackingId":"t-1","timestampUtc":"2026-01-30T00:00:00Z","retryAfter":30,
		"info":{"correlationId":"c-9","credentialError":"x","credentialMessage":"busy","requestId":"r-old","operationExpires":"2026-01-30T01:00:00Z"}}`
	e := parseErrorBody("issueCertificate", 409, []byte(body))
	want := &Error{Op: "issueCertificate", Status: 409, Code: 409005, Message: "An active operation exists", TrackingID: "t-1",
		RetryAfter: 30 * time.Second, Info: &ErrorInfo{CorrelationID: "c-9", CredentialError: "x", CredentialMessage: "busy",
			RequestID: "r-old", OperationExpires: time.Date(2026, 1, 30, 1, 0, 0, 0, time.UTC)}}
	if !reflect.DeepEqual(e, want) {
		t.Errorf("parseErrorBody =\n %+v %+v\nwant\n %+v %+v", e, e.Info, want, want.Info)
	}
	for _, tc := range []struct {
		body string
		want Error
	}{
		{`{"errorCode":"400040","message":"FailedToDecodeCsr"}`, Error{Code: 400040, Message: "FailedToDecodeCsr"}},
		{`{"errorCode":true,"message":7,"retryAfter":"5"}`, Error{RetryAfter: 5 * time.Second}},
		{`{"retryAfter":-3,"errorCode":1.5}`, Error{}},
		{`{"retryAfter":99999999}`, Error{RetryAfter: 24 * time.Hour}},
		{`not json`, Error{}},
		{``, Error{}},
		{`{"info":"text"}`, Error{}},
	} {
		got := parseErrorBody("op", 500, []byte(tc.body))
		tc.want.Op, tc.want.Status = "op", 500
		if !reflect.DeepEqual(*got, tc.want) {
			t.Errorf("parseErrorBody(%s) = %+v, want %+v", tc.body, *got, tc.want)
		}
	}
}
