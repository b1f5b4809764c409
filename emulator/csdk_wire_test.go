package emulator

import (
	"bytes"
	"crypto/tls"
	"encoding/base64"
	"encoding/json"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest"
	"go.uber.org/zap/zaptest/observer"
)

// These tests replay, byte for byte, what Microsoft's embedded C SDK
// (azure-sdk-for-c, branch feature/dps-csr-preview, azsdk-c/1.6.0-beta.1)
// sent to iotemu from its samples paho_iot_provisioning_csr_sample and
// paho_iot_hub_csr_sample: the user names, CleanSession 0, the topics with
// the SDK's fixed request IDs ($rid=1 for DPS, csr-001 in the hub sample),
// and the JSON bodies its az_json_writer builds (registrationId then csr;
// id then csr; padded standard base64 of the DER CSR, '/' not escaped).

// The C SDK's wire constants, as its samples produced them.
const (
	csdkRegistrationID = "paho-sample-device1"
	csdkDPSAPIVersion  = "2025-07-01-preview" // AZ_IOT_PROVISIONING_SERVICE_VERSION
	csdkHubAPIVersion  = "2025-08-01-preview"
	csdkClientType     = "azsdk-c%2F1.6.0-beta.1" // DeviceClientType, URL-encoded by the SDK
	csdkHubRID         = "csr-001"                // paho_iot_hub_csr_sample's request ID
)

// jsonKeys lists a JSON object's top-level keys in the order they travel.
func jsonKeys(t *testing.T, body []byte) []string {
	t.Helper()
	dec := json.NewDecoder(bytes.NewReader(body))
	if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
		t.Fatalf("body %s is not a JSON object (%v)", body, err)
	}
	var keys []string
	for dec.More() {
		k, err := dec.Token()
		if err != nil {
			t.Fatalf("body %s: %v", body, err)
		}
		keys = append(keys, k.(string))
		var skip json.RawMessage
		if err := dec.Decode(&skip); err != nil {
			t.Fatalf("body %s: %v", body, err)
		}
	}
	return keys
}

// logString returns a logged field that must be a string, for calendar
// times: iotemu's console encoder prints time fields as a time of day only.
func logString(t *testing.T, logs *observer.ObservedLogs, msg, key string) string {
	t.Helper()
	entries := logs.FilterMessage(msg).All()
	if len(entries) == 0 {
		t.Fatalf("no log entry %q", msg)
	}
	v, ok := entries[len(entries)-1].ContextMap()[key]
	s, isString := v.(string)
	if !ok || !isString {
		t.Fatalf("log %q: %s = %v (%T), want an RFC 3339 date-time string", msg, key, v, v)
	}
	return s
}

// csdkHubDial connects as the C SDK does to the hub: its user name, CleanSession 0.
func csdkHubDial(t *testing.T, env *hubEnv, cert *tls.Certificate) *hubClient {
	t.Helper()
	user := hub1Host + "/" + csdkRegistrationID + "/?api-version=" + csdkHubAPIVersion + "&DeviceClientType=" + csdkClientType
	c := env.mustConnect(t, hubDial{clientID: csdkRegistrationID, username: user, cert: cert, clean: false})
	c.mustSubscribe(t, "$iothub/credentials/res/#")
	return c
}

// csdkHubRequest is the body az_iot_hub_client_certificate_signing_request_get_request_payload writes.
func csdkHubRequest(csr []byte) []byte {
	return []byte(`{"id":"` + csdkRegistrationID + `","csr":"` + base64.StdEncoding.EncodeToString(csr) + `"}`)
}

// The hub's credential API, driven as paho_iot_hub_csr_sample drives it: the
// 202 and the 200 carry their fields in the service's documented order
// (correlationId first), in both forms of the 200 body. The C SDK reads only
// the bare array; the object form is what Microsoft's service test log shows.
func TestCSDKHubCSRWireForm(t *testing.T) {
	for _, form := range []string{"object", "array"} {
		t.Run(form, func(t *testing.T) {
			env := newHubEnv(t, func(c *Config) { c.Certificates.CredentialAPIBody = form })
			dev := env.addIssuedDevice(t, csdkRegistrationID)
			c := csdkHubDial(t, env, dev.cert)
			key := hubNewKey(t)
			c.publish(t, "$iothub/credentials/POST/issueCertificate/?$rid="+csdkHubRID, 1, csdkHubRequest(hubNewCSR(t, key, csdkRegistrationID)))

			accepted := c.expect(t, "$iothub/credentials/res/202/?$rid="+csdkHubRID)
			if keys := jsonKeys(t, accepted.Payload()); !slices.Equal(keys, []string{"correlationId", "operationExpires"}) {
				t.Errorf("202 body %s: fields %v, want correlationId, operationExpires", accepted.Payload(), keys)
			}
			var acc struct {
				CorrelationID    string `json:"correlationId"`
				OperationExpires string `json:"operationExpires"`
			}
			if err := json.Unmarshal(accepted.Payload(), &acc); err != nil || !hubGUIDPattern.MatchString(acc.CorrelationID) {
				t.Fatalf("202 body %s: %v", accepted.Payload(), err)
			}

			done := c.expect(t, "$iothub/credentials/res/200/?$rid="+csdkHubRID)
			switch form {
			case "object":
				if keys := jsonKeys(t, done.Payload()); !slices.Equal(keys, []string{"correlationId", "certificates"}) {
					t.Errorf("200 body fields %v, want correlationId then certificates, as the service sends them", keys)
				}
			case "array":
				if !bytes.HasPrefix(done.Payload(), []byte(`["`)) {
					t.Errorf("200 body %.40s…: want a bare JSON array of strings, what the C SDK parses", done.Payload())
				}
			}
			correlation, chain := issuedChain(t, done, form)
			if form == "object" && correlation != acc.CorrelationID {
				t.Errorf("200 correlationId %q, want the 202's %q", correlation, acc.CorrelationID)
			}
			verifyIssuedChain(t, env.ep, chain, key, csdkRegistrationID)

			// The logs give the dates in full, not a time of day.
			notAfter := logString(t, env.logs, "certificate issued through the credential API", "not_after")
			if want := chain[0].NotAfter.UTC().Format(time.RFC3339); notAfter != want {
				t.Errorf("logged not_after %q, want %q", notAfter, want)
			}
			if expires := logString(t, env.logs, "credential operation started", "operation_expires"); expires != acc.OperationExpires {
				t.Errorf("logged operation_expires %q, want the 202's %q", expires, acc.OperationExpires)
			}
		})
	}
}

// A CSR the hub refuses (here: for another CN, as tried with the C SDK
// sample) is answered 400 with errorCode 400040 and the error's name and
// detail in info.credentialError and info.credentialMessage, where the C
// SDK's az_iot_hub_client_certificate_signing_request_parse_error_response
// reads them; its unit test has {"info":{"credentialError":"FailedToDecodeCsr",…}}.
func TestCSDKHubCSRRefusedCarriesCredentialError(t *testing.T) {
	env := newHubEnv(t, nil)
	dev := env.addIssuedDevice(t, csdkRegistrationID)
	c := csdkHubDial(t, env, dev.cert)
	for _, tt := range []struct {
		name, detail string
		csr          []byte
	}{
		{"CSR for another CN", "other-name", hubNewCSR(t, hubNewKey(t), "other-name")},
		{"CSR that is not DER", "", []byte("hello")},
	} {
		t.Run(tt.name, func(t *testing.T) {
			c.publish(t, "$iothub/credentials/POST/issueCertificate/?$rid="+csdkHubRID, 1, csdkHubRequest(tt.csr))
			m := c.expect(t, "$iothub/credentials/res/400/?$rid="+csdkHubRID)
			if keys := jsonKeys(t, m.Payload()); !slices.Equal(keys, []string{"errorCode", "message", "trackingId", "timestampUtc", "info"}) {
				t.Errorf("400 body %s: fields %v, want errorCode, message, trackingId, timestampUtc, info", m.Payload(), keys)
			}
			b := hubErrorOf(t, m)
			if b.ErrorCode != hubErrCSRDecode {
				t.Errorf("errorCode %d, want %d", b.ErrorCode, hubErrCSRDecode)
			}
			name, _ := b.Info["credentialError"].(string)
			detail, _ := b.Info["credentialMessage"].(string)
			if name != "FailedToDecodeCsr" || detail == "" || !strings.Contains(detail, tt.detail) {
				t.Errorf("info %v: want credentialError FailedToDecodeCsr and a credentialMessage mentioning %q", b.Info, tt.detail)
			}
		})
	}
	// The refusals started no operation: a good request is accepted.
	c.publish(t, "$iothub/credentials/POST/issueCertificate/?$rid="+csdkHubRID, 1, csdkHubRequest(hubNewCSR(t, hubNewKey(t), csdkRegistrationID)))
	c.expect(t, "$iothub/credentials/res/202/?$rid="+csdkHubRID)
}

// DPS registration with a CSR as paho_iot_provisioning_csr_sample does it:
// X.509 onboarding certificate, no ClientVersion in the user name,
// CleanSession 0, $rid=1 for the register request and every poll, the
// operation ID unescaped in the poll topic, an empty poll payload.
func TestCSDKDPSCSRWireForm(t *testing.T) {
	onboarding := hubMakeCert(t, csdkRegistrationID, false, nil)
	core, logs := observer.New(zapcore.InfoLevel)
	cfg := Config{
		DPS:   ListenerConfig{Listen: "127.0.0.1:0"},
		Hubs:  dpsTestHubs(),
		Admin: ListenerConfig{Listen: "127.0.0.1:0"},
		Enrollments: []Enrollment{{RegistrationID: csdkRegistrationID,
			Attestation: Attestation{Type: AttestX509, CertificatePEM: dpsPEM(onboarding.Leaf)}}},
	}
	e, err := New(cfg, t.TempDir(), Options{Logger: zap.New(zapcore.NewTee(zaptest.NewLogger(t).Core(), core))})
	if err != nil {
		t.Fatal(err)
	}
	e.dps.assignDelay = 20 * time.Millisecond
	ep, err := e.Start()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = e.Close() })

	msgs := make(chan mqtt.Message, 8)
	o := mqtt.NewClientOptions().AddBroker("ssl://" + ep.DPS).
		SetClientID(csdkRegistrationID).
		SetUsername(ep.IDScope + "/registrations/" + csdkRegistrationID + "/api-version=" + csdkDPSAPIVersion).
		SetCleanSession(false).SetProtocolVersion(4).SetAutoReconnect(false).SetConnectRetry(false).
		SetKeepAlive(240 * time.Second).SetConnectTimeout(hubWait).
		SetTLSConfig(&tls.Config{RootCAs: dpsRoots(t, ep), Certificates: []tls.Certificate{*onboarding}, MinVersion: tls.VersionTLS12})
	c := mqtt.NewClient(o)
	hubWaitToken(t, c.Connect(), "connect to DPS")
	t.Cleanup(func() { c.Disconnect(0) })
	hubWaitToken(t, c.Subscribe("$dps/registrations/res/#", 1, func(_ mqtt.Client, m mqtt.Message) { msgs <- m }), "subscribe")
	next := func(wantPrefix string) mqtt.Message {
		t.Helper()
		select {
		case m := <-msgs:
			if !strings.HasPrefix(m.Topic(), wantPrefix) {
				t.Fatalf("received %s %s, want %s…", m.Topic(), m.Payload(), wantPrefix)
			}
			return m
		case <-time.After(hubWait):
			t.Fatalf("no answer on %s…", wantPrefix)
		}
		return nil
	}

	key, csr := dpsCSR(t, csdkRegistrationID)
	body := `{"registrationId":"` + csdkRegistrationID + `","csr":"` + base64.StdEncoding.EncodeToString(csr) + `"}`
	hubWaitToken(t, c.Publish("$dps/registrations/PUT/iotdps-register/?$rid=1", 1, false, []byte(body)), "register")
	m := next("$dps/registrations/res/202/?$rid=1&retry-after=")
	var st wireStatus
	if err := json.Unmarshal(m.Payload(), &st); err != nil || st.Status != "assigning" || st.OperationID == "" {
		t.Fatalf("202 body %s (%v)", m.Payload(), err)
	}
	for {
		hubWaitToken(t, c.Publish("$dps/registrations/GET/iotdps-get-operationstatus/?$rid=1&operationId="+st.OperationID, 1, false, []byte{}), "poll")
		m = next("$dps/registrations/res/")
		q, _ := url.ParseQuery(m.Topic()[strings.Index(m.Topic(), "?")+1:])
		if q.Get("$rid") != "1" {
			t.Fatalf("answer %s does not echo $rid=1", m.Topic())
		}
		if strings.HasPrefix(m.Topic(), "$dps/registrations/res/200/") {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err := json.Unmarshal(m.Payload(), &st); err != nil || st.Status != "assigned" {
		t.Fatalf("200 body %s (%v)", m.Payload(), err)
	}
	// What the C SDK's parser needs: assignedHub and deviceId together, the chain as strings.
	if st.RegistrationState.AssignedHub == "" || st.RegistrationState.DeviceID != csdkRegistrationID {
		t.Errorf("registrationState %s lacks assignedHub or deviceId", m.Payload())
	}
	chain := dpsChain(t, st.RegistrationState)
	verifyIssuedChain(t, ep, chain, key, csdkRegistrationID)

	if notAfter, want := logString(t, logs, "device assigned", "issued_not_after"), chain[0].NotAfter.UTC().Format(time.RFC3339); notAfter != want {
		t.Errorf("logged issued_not_after %q, want %q", notAfter, want)
	}
}
