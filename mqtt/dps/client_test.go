package dps

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/zap/zaptest"

	"github.com/dpsagent/dpsagent/emulator/mqttsrv"
	"github.com/dpsagent/dpsagent/mqtt"
	"github.com/dpsagent/dpsagent/mqtt/sas"
)

const (
	testScope = "0ne00000001"
	testRegID = "gw-001"
)

var testKey = []byte("0123456789abcdef0123456789abcdef")

func newTestClient(t *testing.T, f *fakeDPS, mutate func(*Options)) *Client {
	t.Helper()
	o := Options{
		Endpoint:        f.addr,
		IDScope:         testScope,
		RegistrationID:  testRegID,
		Auth:            SymmetricKey(testKey),
		TrustBundleFile: f.caFile,
		ClientVersion:   "dpsagent/test 1.0",
		Logger:          zaptest.NewLogger(t),
		ResponseTimeout: 5 * time.Second,
		Timeout:         30 * time.Second,
	}
	if mutate != nil {
		mutate(&o)
	}
	c, err := New(o)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// ridOf is the $rid of a request topic.
func ridOf(t *testing.T, topic string) string {
	t.Helper()
	parsed, err := mqtt.ParseTopic(topic)
	if err != nil {
		t.Errorf("request topic %q: %v", topic, err)
	}
	rid, ok := parsed.RequestID()
	if !ok || rid == "" {
		t.Errorf("request topic %q has no $rid", topic)
	}
	return rid
}

const (
	assigningBody = `{"operationId":"4.d0a6c8b1.op","status":"assigning"}`
	chainLeaf     = "leaf-der"
	chainRoot     = "root-der"
)

func assignedBody(chain ...string) string {
	enc := make([]string, len(chain))
	for i, c := range chain {
		enc[i] = base64.StdEncoding.EncodeToString([]byte(c))
	}
	b, _ := json.Marshal(map[string]any{
		"operationId": "4.d0a6c8b1.op",
		"status":      "assigned",
		"unknownTop":  map[string]any{"ignored": true},
		"registrationState": map[string]any{
			"registrationId":         testRegID,
			"createdDateTimeUtc":     "2026-05-01T10:00:00.1234567Z",
			"lastUpdatedDateTimeUtc": "2026-05-01T10:00:02.5Z",
			"assignedHub":            "hub1.azure-devices.net",
			"deviceId":               testRegID,
			"status":                 "assigned",
			"substatus":              "initialAssignment",
			"etag":                   "IjEwMDAi",
			"payload":                map[string]any{"zone": "b"},
			"issuedCertificateChain": enc,
			"futureField":            []int{1, 2},
		},
	})
	return string(b)
}

// The documented flow: subscribe first, register, 202 with retry-after,
// poll with an empty payload, 200 assigned; the client checks the user name,
// client ID, SAS token and bodies DPS would check.
func TestRegisterFlow(t *testing.T) {
	f := startFakeDPS(t, func(f *fakeDPS, c *mqttsrv.Conn, req request) {
		rid := ridOf(t, req.topic)
		switch {
		case strings.HasPrefix(req.topic, "$dps/registrations/PUT/iotdps-register/"):
			// retry-after before $rid: parameters are read by name.
			f.reply(c, "$dps/registrations/res/202/?retry-after=1&$rid="+rid, assigningBody)
		case strings.HasPrefix(req.topic, "$dps/registrations/GET/iotdps-get-operationstatus/"):
			f.reply(c, "$dps/registrations/res/200/?$rid="+rid, assignedBody(chainLeaf, "ica-der", chainRoot))
		}
	})
	c := newTestClient(t, f, nil)
	csr := []byte{0x30, 0x82, 0x01, 0x02, 0xff}
	res, err := c.Register(context.Background(), csr, json.RawMessage(`{"zone":"b"}`))
	if err != nil {
		t.Fatal(err)
	}
	f.waitClosed(t)

	want := &Result{
		OperationID: "4.d0a6c8b1.op", Status: "assigned", Substatus: "initialAssignment",
		AssignedHub: "hub1.azure-devices.net", DeviceID: testRegID, ETag: "IjEwMDAi",
		CreatedAt:     time.Date(2026, 5, 1, 10, 0, 0, 123456700, time.UTC),
		LastUpdatedAt: time.Date(2026, 5, 1, 10, 0, 2, 500000000, time.UTC),
	}
	if res.OperationID != want.OperationID || res.Status != want.Status || res.Substatus != want.Substatus ||
		res.AssignedHub != want.AssignedHub || res.DeviceID != want.DeviceID || res.ETag != want.ETag ||
		!res.CreatedAt.Equal(want.CreatedAt) || !res.LastUpdatedAt.Equal(want.LastUpdatedAt) {
		t.Errorf("result %+v\nwant %+v", res, want)
	}
	if got := fmt.Sprintf("%q", res.IssuedCertificateChain); got != `["leaf-der" "ica-der" "root-der"]` {
		t.Errorf("chain %s, want the three certificates in the order sent", got)
	}
	if string(res.Payload) != `{"zone":"b"}` {
		t.Errorf("payload %s", res.Payload)
	}

	connects, subs, reqs := f.recorded()
	if len(connects) != 1 {
		t.Fatalf("%d connections, want 1", len(connects))
	}
	cr := connects[0]
	if cr.ClientID != testRegID || !cr.CleanSession {
		t.Errorf("client ID %q, clean session %v", cr.ClientID, cr.CleanSession)
	}
	if want := "0ne00000001/registrations/gw-001/api-version=2025-07-01-preview&ClientVersion=dpsagent%2Ftest%201.0"; cr.Username != want {
		t.Errorf("user name %q\nwant      %q", cr.Username, want)
	}
	tok, err := sas.Parse(string(cr.Password))
	if err != nil {
		t.Fatalf("password is not a SAS token: %v", err)
	}
	if err := sas.Verify(tok, sas.DPSResource(testScope, testRegID), [][]byte{testKey}, time.Now()); err != nil {
		t.Errorf("SAS token does not verify: %v", err)
	}
	if tok.KeyName() != "registration" {
		t.Errorf("skn %q, want registration", tok.KeyName())
	}
	if life := time.Until(tok.Expiry()); life > time.Hour+time.Minute || life < 50*time.Minute {
		t.Errorf("token lives %s, want about an hour", life)
	}
	if len(subs) != 1 || subs[0] != "$dps/registrations/res/#" {
		t.Errorf("subscriptions %q", subs)
	}
	if len(reqs) != 2 {
		t.Fatalf("%d requests, want register and one poll", len(reqs))
	}
	reg, poll := reqs[0], reqs[1]
	if !reg.afterSubscribe || reg.qos != 1 || poll.qos != 1 {
		t.Errorf("register after subscribe %v, QoS %d and %d; want true, 1, 1", reg.afterSubscribe, reg.qos, poll.qos)
	}
	if want := "$dps/registrations/PUT/iotdps-register/?$rid=" + ridOf(t, reg.topic); reg.topic != want {
		t.Errorf("register topic %q", reg.topic)
	}
	var body map[string]json.RawMessage
	if err := json.Unmarshal(reg.payload, &body); err != nil {
		t.Fatal(err)
	}
	if string(body["registrationId"]) != `"gw-001"` || string(body["payload"]) != `{"zone":"b"}` ||
		string(body["csr"]) != `"`+base64.StdEncoding.EncodeToString(csr)+`"` || len(body) != 3 {
		t.Errorf("register body %s", reg.payload)
	}
	wantPoll := "$dps/registrations/GET/iotdps-get-operationstatus/?$rid=" + ridOf(t, poll.topic) + "&operationId=4.d0a6c8b1.op"
	if poll.topic != wantPoll || len(poll.payload) != 0 {
		t.Errorf("poll topic %q with %d payload bytes, want %q and none", poll.topic, len(poll.payload), wantPoll)
	}
	if ridOf(t, reg.topic) == ridOf(t, poll.topic) {
		t.Error("register and poll share a $rid")
	}
	if gap := poll.at.Sub(reg.at); gap < 900*time.Millisecond {
		t.Errorf("polled %s after the 202, want retry-after=1s", gap)
	}
}

// Without a CSR or payload, the body holds only the registration ID.
func TestRegisterMinimalBody(t *testing.T) {
	f := startFakeDPS(t, func(f *fakeDPS, c *mqttsrv.Conn, req request) {
		f.reply(c, "$dps/registrations/res/200/?$rid="+ridOf(t, req.topic), assignedBody())
	})
	res, err := newTestClient(t, f, nil).Register(context.Background(), nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if res.IssuedCertificateChain != nil {
		t.Errorf("chain %q without a CSR", res.IssuedCertificateChain)
	}
	_, _, reqs := f.recorded()
	if string(reqs[0].payload) != `{"registrationId":"gw-001"}` {
		t.Errorf("body %s", reqs[0].payload)
	}
}

// Answers are matched by $rid: a stray answer for another request, and a
// repeated one, are ignored.
func TestRegisterMatchesByRequestID(t *testing.T) {
	f := startFakeDPS(t, func(f *fakeDPS, c *mqttsrv.Conn, req request) {
		rid := ridOf(t, req.topic)
		f.reply(c, "$dps/registrations/res/401/?$rid=not-"+rid, `{"errorCode":401002}`)
		f.reply(c, "$dps/registrations/res/500/?$rid=", `{}`)
		f.reply(c, "$dps/registrations/res/200/?$rid="+rid, assignedBody(chainLeaf))
		f.reply(c, "$dps/registrations/res/500/?$rid="+rid, `{"errorCode":500000}`)
	})
	res, err := newTestClient(t, f, nil).Register(context.Background(), nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if res.AssignedHub != "hub1.azure-devices.net" {
		t.Errorf("result %+v", res)
	}
}

// A 202 without retry-after waits the 2 s default before polling.
func TestRegisterDefaultPollInterval(t *testing.T) {
	var polls atomic.Int32
	f := startFakeDPS(t, func(f *fakeDPS, c *mqttsrv.Conn, req request) {
		rid := ridOf(t, req.topic)
		if strings.Contains(req.topic, "iotdps-register") || polls.Add(1) < 2 {
			f.reply(c, "$dps/registrations/res/202/?$rid="+rid, assigningBody)
			return
		}
		f.reply(c, "$dps/registrations/res/200/?$rid="+rid, assignedBody(chainLeaf))
	})
	if _, err := newTestClient(t, f, nil).Register(context.Background(), nil, nil); err != nil {
		t.Fatal(err)
	}
	_, _, reqs := f.recorded()
	if len(reqs) != 3 {
		t.Fatalf("%d requests, want 3", len(reqs))
	}
	for i := 1; i < len(reqs); i++ {
		if gap := reqs[i].at.Sub(reqs[i-1].at); gap < 1900*time.Millisecond {
			t.Errorf("request %d came %s after the previous, want the 2 s default", i, gap)
		}
	}
}

// Throttling is waited out as told and the same request is sent again.
func TestRegisterThrottledThenAssigned(t *testing.T) {
	var n atomic.Int32
	f := startFakeDPS(t, func(f *fakeDPS, c *mqttsrv.Conn, req request) {
		rid := ridOf(t, req.topic)
		if n.Add(1) == 1 {
			f.reply(c, "$dps/registrations/res/429/?$rid="+rid+"&retry-after=1", `{"errorCode":429001,"message":"Throttled"}`)
			return
		}
		f.reply(c, "$dps/registrations/res/200/?$rid="+rid, assignedBody(chainLeaf))
	})
	if _, err := newTestClient(t, f, nil).Register(context.Background(), nil, nil); err != nil {
		t.Fatal(err)
	}
	_, _, reqs := f.recorded()
	if len(reqs) != 2 || !strings.Contains(reqs[1].topic, "iotdps-register") {
		t.Fatalf("requests %v, want the register request twice", reqs)
	}
	if gap := reqs[1].at.Sub(reqs[0].at); gap < 900*time.Millisecond {
		t.Errorf("retried after %s, want retry-after=1s", gap)
	}
}

// Every way DPS can end a registration badly becomes a *Error that says
// whether to retry and what to do.
func TestRegisterServiceErrors(t *testing.T) {
	tests := []struct {
		name       string
		status     int
		retryAfter string
		body       string
		want       Error
		retryable  bool
		hint       string
	}{
		{
			name: "unauthorized", status: 401,
			body:      `{"errorCode":401002,"trackingId":"trk-1","message":"Invalid certificate.","timestampUtc":"2026-05-01T10:00:00Z","info":{"x":1}}`,
			want:      Error{Kind: KindService, Op: OpRegister, Status: 401, Code: 401002, TrackingID: "trk-1", Message: "Invalid certificate."},
			retryable: false, hint: "the onboarding credential was not accepted",
		},
		{
			name: "not found", status: 404, body: `{"errorCode":404201,"message":"Enrollment not found"}`,
			want:      Error{Kind: KindService, Op: OpRegister, Status: 404, Code: 404201, Message: "Enrollment not found"},
			retryable: false, hint: "no enrollment for this registration ID in this ID scope",
		},
		{
			name: "bad CSR", status: 400, body: `{"errorCode":400004,"message":"CSR CN does not match"}`,
			want:      Error{Kind: KindService, Op: OpRegister, Status: 400, Code: 400004, Message: "CSR CN does not match"},
			retryable: false, hint: "subject CN must equal the registration ID",
		},
		{
			name: "server error with retry-after", status: 503, retryAfter: "7", body: `{"errorCode":503000}`,
			want:      Error{Kind: KindService, Op: OpRegister, Status: 503, Code: 503000, Wait: 7 * time.Second},
			retryable: true, hint: "temporary",
		},
		{
			name: "error without a body", status: 500, body: ``,
			want:      Error{Kind: KindService, Op: OpRegister, Status: 500},
			retryable: true, hint: "temporary",
		},
		{
			name: "error with an unreadable body", status: 412, body: `<html>`,
			want:      Error{Kind: KindService, Op: OpRegister, Status: 412, Message: "(the error body was not readable)"},
			retryable: false, hint: "precondition failed",
		},
		{
			name: "failed", status: 200,
			body:      `{"operationId":"op","status":"failed","registrationState":{"registrationId":"gw-001","status":"failed","errorCode":400209,"errorMessage":"Custom allocation failed"}}`,
			want:      Error{Kind: KindService, Op: OpRegister, Status: 200, Code: 400209, Message: "Custom allocation failed", State: StateFailed},
			retryable: false, hint: "DPS rejected the request as invalid",
		},
		{
			name: "failed with a server error code", status: 200,
			body:      `{"operationId":"op","status":"failed","registrationState":{"status":"failed","errorCode":500000,"errorMessage":"Internal"}}`,
			want:      Error{Kind: KindService, Op: OpRegister, Status: 200, Code: 500000, Message: "Internal", State: StateFailed},
			retryable: true, hint: "temporary",
		},
		{
			name: "failed without a code", status: 200,
			body:      `{"operationId":"op","status":"failed"}`,
			want:      Error{Kind: KindService, Op: OpRegister, Status: 200, State: StateFailed},
			retryable: false, hint: "could not assign the device",
		},
		{
			name: "disabled", status: 200,
			body:      `{"operationId":"op","status":"disabled","registrationState":{"registrationId":"gw-001","status":"disabled"}}`,
			want:      Error{Kind: KindService, Op: OpRegister, Status: 200, State: StateDisabled},
			retryable: false, hint: "disabled in DPS",
		},
		{
			name: "malformed JSON", status: 200, body: `{"operationId":`,
			want:      Error{Kind: KindProtocol, Op: OpRegister, Status: 200},
			retryable: true,
		},
		{
			name: "wrong type", status: 200, body: `{"operationId":"op","status":"assigned","registrationState":{"assignedHub":42}}`,
			want:      Error{Kind: KindProtocol, Op: OpRegister, Status: 200},
			retryable: true,
		},
		{
			name: "assigned without a hub", status: 200, body: `{"operationId":"op","status":"assigned","registrationState":{"deviceId":"d"}}`,
			want:      Error{Kind: KindProtocol, Op: OpRegister, Status: 200},
			retryable: true,
		},
		{
			name: "huge body", status: 200, body: `{"operationId":"` + strings.Repeat("x", 97<<10) + `"}`,
			want:      Error{Kind: KindProtocol, Op: OpRegister, Status: 200},
			retryable: true,
		},
		{
			name: "in progress without an operation ID", status: 202, body: `{"status":"assigning"}`,
			want:      Error{Kind: KindProtocol, Op: OpRegister, Status: 202, Message: "the in-progress answer has no operationId to poll"},
			retryable: true,
		},
		{
			name: "unknown status in a 200", status: 200, body: `{"operationId":"op","status":"exploded"}`,
			want:      Error{Kind: KindProtocol, Op: OpRegister, Status: 200, Message: `unknown registration status "exploded"`},
			retryable: true,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := startFakeDPS(t, func(f *fakeDPS, c *mqttsrv.Conn, req request) {
				topic := fmt.Sprintf("$dps/registrations/res/%d/?$rid=%s", tt.status, ridOf(t, req.topic))
				if tt.retryAfter != "" {
					topic += "&retry-after=" + tt.retryAfter
				}
				f.reply(c, topic, tt.body)
			})
			_, err := newTestClient(t, f, nil).Register(context.Background(), nil, nil)
			e := asError(t, err)
			got := *e
			got.Err, got.hint, got.connack = nil, "", 0
			if tt.want.Kind == KindProtocol && tt.want.Message == "" {
				got.Message = ""
			}
			if got != tt.want {
				t.Errorf("error %+v\nwant  %+v", got, tt.want)
			}
			if e.Retryable() != tt.retryable {
				t.Errorf("Retryable() = %v, want %v", e.Retryable(), tt.retryable)
			}
			if e.RetryAfter() != tt.want.Wait {
				t.Errorf("RetryAfter() = %s, want %s", e.RetryAfter(), tt.want.Wait)
			}
			if !strings.Contains(e.Hint(), tt.hint) || !strings.Contains(err.Error(), e.Hint()) {
				t.Errorf("hint %q should contain %q and appear in %q", e.Hint(), tt.hint, err)
			}
			if !strings.HasPrefix(err.Error(), `register "gw-001" with DPS: DPS register: `) {
				t.Errorf("error text %q does not say what failed", err)
			}
			f.waitClosed(t)
		})
	}
}

// CONNACK refusals: 4 and 5 are the credential; 3 is temporary.
func TestRegisterConnectionRefused(t *testing.T) {
	tests := []struct {
		code      mqttsrv.ConnackCode
		auth      Auth
		kind      Kind
		retryable bool
		hint      string
	}{
		{mqttsrv.RefusedNotAuthorized, SymmetricKey(testKey), KindAuth, false, "did not accept the symmetric key"},
		{mqttsrv.RefusedBadUsernameOrPassword, GroupKey(testKey), KindAuth, false, "derived from the group key"},
		{mqttsrv.RefusedServerUnavailable, SymmetricKey(testKey), KindRefused, true, "temporarily unavailable"},
		{mqttsrv.RefusedIdentifierRejected, SymmetricKey(testKey), KindRefused, false, "registration_id"},
	}
	for _, tt := range tests {
		t.Run(tt.code.String(), func(t *testing.T) {
			f := startFakeDPS(t, nil)
			f.connack = func(*mqttsrv.ConnectRequest) mqttsrv.ConnackCode { return tt.code }
			_, err := newTestClient(t, f, func(o *Options) { o.Auth = tt.auth }).Register(context.Background(), nil, nil)
			e := asError(t, err)
			if e.Kind != tt.kind || e.Op != OpConnect || e.Retryable() != tt.retryable || !strings.Contains(e.Hint(), tt.hint) {
				t.Errorf("error %v: kind %v, op %s, retryable %v; want %v, connect, %v, hint with %q", err, e.Kind, e.Op, e.Retryable(), tt.kind, tt.retryable, tt.hint)
			}
			connects, _, _ := f.recorded()
			pw := string(connects[0].Password)
			tok, perr := sas.Parse(pw)
			if perr != nil {
				t.Fatal(perr)
			}
			sig := base64.StdEncoding.EncodeToString(tok.Signature())
			for _, secret := range []string{pw, sig, base64.StdEncoding.EncodeToString(testKey), string(testKey)} {
				if strings.Contains(err.Error(), secret) || strings.Contains(fmt.Sprintf("%+v", e), secret) {
					t.Errorf("the error reveals a secret: %v", err)
				}
			}
		})
	}
}

// The device key of a group member is derived from the group key.
func TestRegisterGroupKeySignsWithDerivedKey(t *testing.T) {
	f := startFakeDPS(t, func(f *fakeDPS, c *mqttsrv.Conn, req request) {
		f.reply(c, "$dps/registrations/res/200/?$rid="+ridOf(t, req.topic), assignedBody())
	})
	if _, err := newTestClient(t, f, func(o *Options) { o.Auth = GroupKey(testKey) }).Register(context.Background(), nil, nil); err != nil {
		t.Fatal(err)
	}
	connects, _, _ := f.recorded()
	tok, err := sas.Parse(string(connects[0].Password))
	if err != nil {
		t.Fatal(err)
	}
	derived := sas.DeriveDeviceKey(testKey, testRegID)
	if err := sas.Verify(tok, sas.DPSResource(testScope, testRegID), [][]byte{derived}, time.Now()); err != nil {
		t.Errorf("token not signed with the derived key: %v", err)
	}
	if err := sas.Verify(tok, sas.DPSResource(testScope, testRegID), [][]byte{testKey}, time.Now()); err == nil {
		t.Error("token signed with the group key itself")
	}
}

// Cancelling the context while waiting to poll returns at once, with the
// context's error, and disconnects.
func TestRegisterCancelledWhileWaiting(t *testing.T) {
	f := startFakeDPS(t, func(f *fakeDPS, c *mqttsrv.Conn, req request) {
		f.reply(c, "$dps/registrations/res/202/?$rid="+ridOf(t, req.topic)+"&retry-after=20", assigningBody)
	})
	c := newTestClient(t, f, nil)
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		// Cancel once the register request has been answered.
		for {
			if _, _, reqs := f.recorded(); len(reqs) > 0 {
				time.Sleep(200 * time.Millisecond)
				cancel()
				return
			}
			time.Sleep(10 * time.Millisecond)
		}
	}()
	start := time.Now()
	_, err := c.Register(ctx, nil, nil)
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("error %v, want context.Canceled", err)
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("returned %s after the start, want promptly after the cancel", d)
	}
	f.waitClosed(t)
}

// A retry-after beyond the registration's time limit is reported at once,
// as a retryable error carrying the wait, rather than slept through.
func TestRegisterWaitBeyondDeadline(t *testing.T) {
	f := startFakeDPS(t, func(f *fakeDPS, c *mqttsrv.Conn, req request) {
		f.reply(c, "$dps/registrations/res/202/?$rid="+ridOf(t, req.topic)+"&retry-after=600", assigningBody)
	})
	start := time.Now()
	_, err := newTestClient(t, f, func(o *Options) { o.Timeout = 5 * time.Second }).Register(context.Background(), nil, nil)
	e := asError(t, err)
	if e.Kind != KindTimeout || !e.Retryable() || e.RetryAfter() != 600*time.Second {
		t.Errorf("error %v: kind %v, retry after %s", err, e.Kind, e.RetryAfter())
	}
	if time.Since(start) > 3*time.Second {
		t.Error("slept instead of reporting")
	}
}

// No answer within ResponseTimeout is a retryable timeout.
func TestRegisterNoAnswer(t *testing.T) {
	f := startFakeDPS(t, nil)
	_, err := newTestClient(t, f, func(o *Options) { o.ResponseTimeout = 300 * time.Millisecond }).Register(context.Background(), nil, nil)
	e := asError(t, err)
	if e.Kind != KindTimeout || e.Op != OpRegister || !e.Retryable() {
		t.Errorf("error %v, want a retryable register timeout", err)
	}
	f.waitClosed(t)
}

// The whole registration is bounded by Timeout even when DPS keeps saying
// "assigning".
func TestRegisterOverallTimeout(t *testing.T) {
	f := startFakeDPS(t, func(f *fakeDPS, c *mqttsrv.Conn, req request) {
		f.reply(c, "$dps/registrations/res/202/?$rid="+ridOf(t, req.topic)+"&retry-after=1", assigningBody)
	})
	_, err := newTestClient(t, f, func(o *Options) { o.Timeout = 2500 * time.Millisecond }).Register(context.Background(), nil, nil)
	e := asError(t, err)
	if e.Kind != KindTimeout || !e.Retryable() {
		t.Errorf("error %v, want a retryable timeout", err)
	}
}

// A dropped connection is a retryable network error.
func TestRegisterConnectionDropped(t *testing.T) {
	f := startFakeDPS(t, func(_ *fakeDPS, c *mqttsrv.Conn, _ request) {
		c.Close(errors.New("fault: drop"))
	})
	_, err := newTestClient(t, f, nil).Register(context.Background(), nil, nil)
	e := asError(t, err)
	if e.Kind != KindNetwork || !e.Retryable() {
		t.Errorf("error %v: kind %v, want a retryable network error", err, e.Kind)
	}
}

// Without the server's CA in the trust bundle, verification fails and the
// hint names the setting.
func TestRegisterUntrustedServer(t *testing.T) {
	f := startFakeDPS(t, nil)
	_, err := newTestClient(t, f, func(o *Options) { o.TrustBundleFile = "" }).Register(context.Background(), nil, nil)
	e := asError(t, err)
	if e.Kind != KindTLS || e.Retryable() || !strings.Contains(e.Hint(), "trust_bundle_file") {
		t.Errorf("error %v, want a TLS error with a trust_bundle_file hint", err)
	}
	if connects, _, _ := f.recorded(); len(connects) != 0 {
		t.Error("the client sent CONNECT (and its token) to an unverified server")
	}
}

func TestRegisterTransportFailures(t *testing.T) {
	// A port nothing listens on.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closedAddr := l.Addr().String()
	_ = l.Close()
	// A server that is not TLS.
	plain, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer plain.Close()
	go func() {
		for {
			c, err := plain.Accept()
			if err != nil {
				return
			}
			_, _ = c.Write([]byte("HTTP/1.1 400 Bad Request\r\n\r\n"))
			_ = c.Close()
		}
	}()
	tests := []struct {
		name, endpoint string
		kind           Kind
		retryable      bool
		hint           string
	}{
		{"refused", closedAddr, KindNetwork, true, "firewall"},
		{"not TLS", plain.Addr().String(), KindTLS, false, "without TLS"},
		{"no such host", "dps.invalid:8883", KindNetwork, true, "DNS"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := New(Options{Endpoint: tt.endpoint, IDScope: testScope, RegistrationID: testRegID, Auth: SymmetricKey(testKey),
				ConnectTimeout: 5 * time.Second, Logger: zaptest.NewLogger(t)})
			if err != nil {
				t.Fatal(err)
			}
			_, err = c.Register(context.Background(), nil, nil)
			e := asError(t, err)
			if e.Kind != tt.kind || e.Op != OpConnect || e.Retryable() != tt.retryable || !strings.Contains(e.Hint(), tt.hint) {
				t.Errorf("error %v: kind %v retryable %v; want %v %v with hint %q", err, e.Kind, e.Retryable(), tt.kind, tt.retryable, tt.hint)
			}
		})
	}
}

// Bad arguments are refused before connecting.
func TestRegisterBadArguments(t *testing.T) {
	f := startFakeDPS(t, nil)
	c := newTestClient(t, f, nil)
	for name, call := range map[string]func() error{
		"payload not JSON": func() error { _, err := c.Register(context.Background(), nil, json.RawMessage(`{`)); return err },
		"PEM CSR":          func() error { _, err := c.Register(context.Background(), []byte("-----BEGIN"), nil); return err },
		"huge CSR":         func() error { _, err := c.Register(context.Background(), make([]byte, 9<<10), nil); return err },
	} {
		if err := call(); err == nil {
			t.Errorf("%s: no error", name)
		}
	}
	if connects, _, _ := f.recorded(); len(connects) != 0 {
		t.Error("connected despite bad arguments")
	}
}
