package emulator

import (
	"crypto/ecdsa"
	"encoding/json"
	"testing"
	"time"
)

func (env *hubEnv) addFault(t *testing.T, f Fault) {
	t.Helper()
	if _, err := env.e.Faults().Add(f); err != nil {
		t.Fatal(err)
	}
}

func TestHubConnectFaults(t *testing.T) {
	env := newHubEnv(t, nil)
	key := env.addSASDevice(t, "flaky", "hub1")
	d := hubDial{clientID: "flaky", username: hubUser(hub1Host, "flaky", hubAPIGA), clean: true}
	for _, tt := range []struct {
		fault Fault
		want  byte
	}{
		{Fault{Action: ActionThrottle}, 3},
		{Fault{Action: ActionError, Status: 503}, 3},
		{Fault{Action: ActionError, Status: 401}, 5},
		{Fault{Action: ActionError, Status: 400}, 4},
		{Fault{Action: ActionDelay, Delay: Duration(200 * time.Millisecond)}, 0},
	} {
		t.Run(tt.fault.Action, func(t *testing.T) {
			f := tt.fault
			f.Endpoint, f.Device, f.Operation = EndpointHub, "flaky", OpConnect
			env.addFault(t, f)
			d.password = hubSASToken(hub1Host, "flaky", key, time.Now().Add(time.Hour))
			c, code := env.connect(t, d)
			if code != tt.want {
				t.Fatalf("CONNACK %d, want %d", code, tt.want)
			}
			if code == 0 {
				c.Disconnect(250)
			}
		})
	}
	t.Run("drop", func(t *testing.T) {
		env.addFault(t, Fault{Endpoint: EndpointHub, Device: "flaky", Operation: OpConnect, Action: ActionDrop})
		d.password = hubSASToken(hub1Host, "flaky", key, time.Now().Add(time.Hour))
		c, _ := env.connect(t, d)
		if c.IsConnected() {
			t.Fatal("connected through a drop fault")
		}
		env.mustConnect(t, d) // the fault was for one connection
	})
	t.Run("a fault for another device changes nothing", func(t *testing.T) {
		env.addFault(t, Fault{Endpoint: EndpointHub, Device: "someone-else", Operation: OpConnect, Action: ActionThrottle})
		d.password = hubSASToken(hub1Host, "flaky", key, time.Now().Add(time.Hour))
		env.mustConnect(t, d)
	})
}

// A fault for any operation waits for a request it can spoil: the CONNECT and
// the telemetry before the twin request have no body to make malformed, so
// they neither carry it out nor use it up.
func TestHubFaultWaitsForARequestItAppliesTo(t *testing.T) {
	env := newHubEnv(t, nil)
	key := env.addSASDevice(t, "patient", "hub1")
	for _, action := range []string{ActionMalformedJSON, ActionHostile} {
		t.Run(action, func(t *testing.T) {
			env.addFault(t, Fault{Endpoint: EndpointHub, Device: "patient", Operation: "*", Action: action})
			c := env.connectSAS(t, "patient", key, hubAPIGA)
			c.mustSubscribe(t, hubFilterTwinResponses)
			c.publish(t, "devices/patient/messages/events/", 1, []byte("before the twin"))
			c.publish(t, "$iothub/twin/GET/?$rid=spoilt", 0, nil)
			if m := c.expect(t, "$iothub/twin/res/200/?$rid=spoilt"); json.Valid(m.Payload()) && len(m.Payload()) < hubHostilePadding {
				t.Errorf("the twin answer is ordinary (%d bytes): the %s fault was used up before it", len(m.Payload()), action)
			}
			if n := len(env.e.Faults().List()); n != 0 {
				t.Errorf("%d faults left after the twin request", n)
			}
			c.Disconnect(250)
		})
	}
	// A fault named for an operation where its action cannot be carried out
	// would never fire, so it is refused.
	for _, op := range []string{OpConnect, OpTelemetry} {
		if _, err := env.e.Faults().Add(Fault{Endpoint: EndpointHub, Operation: op, Action: ActionMalformedJSON}); err == nil {
			t.Errorf("a malformed_json fault for hub %s was accepted", op)
		}
	}
}

func TestHubTwinFaults(t *testing.T) {
	env := newHubEnv(t, nil)
	key := env.addSASDevice(t, "twin-flaky", "hub1")
	c := env.connectSAS(t, "twin-flaky", key, hubAPIGA)
	c.mustSubscribe(t, hubFilterTwinResponses)
	fault := func(f Fault) {
		f.Endpoint, f.Device, f.Operation = EndpointHub, "twin-flaky", OpTwin
		env.addFault(t, f)
	}
	get := func(rid string) { c.publish(t, "$iothub/twin/GET/?$rid="+rid, 0, nil) }

	fault(Fault{Action: ActionThrottle})
	get("throttled")
	if b := hubErrorOf(t, c.expect(t, "$iothub/twin/res/429/?$rid=throttled")); b.ErrorCode != 429001 {
		t.Errorf("throttled twin errorCode %d, want 429001", b.ErrorCode)
	}

	fault(Fault{Action: ActionError, Status: 503})
	c.publish(t, "$iothub/twin/PATCH/properties/reported/?$rid=unavailable", 0, []byte(`{"a":1}`))
	if b := hubErrorOf(t, c.expect(t, "$iothub/twin/res/503/?$rid=unavailable")); b.ErrorCode != 503001 {
		t.Errorf("errorCode %d, want 503001", b.ErrorCode)
	}
	if v := env.device(t, "twin-flaky").Twin.ReportedVersion; v != 1 {
		t.Errorf("a patch refused by a fault was applied: $version %d", v)
	}

	fault(Fault{Action: ActionMalformedJSON})
	get("malformed")
	if m := c.expect(t, "$iothub/twin/res/200/?$rid=malformed"); json.Valid(m.Payload()) {
		t.Errorf("malformed_json sent valid JSON: %s", m.Payload())
	}

	fault(Fault{Action: ActionHostile})
	get("hostile")
	m := c.expect(t, "$iothub/twin/res/200/?$rid=hostile")
	var v any
	if len(m.Payload()) < hubHostilePadding || json.Unmarshal(m.Payload(), &v) == nil {
		t.Errorf("hostile body of %d bytes decodes: a decoder's depth limit should stop it", len(m.Payload()))
	}

	// A delayed answer does not hold up the next request.
	fault(Fault{Action: ActionDelay, Delay: Duration(300 * time.Millisecond)})
	get("slow")
	get("fast")
	c.expect(t, "$iothub/twin/res/200/?$rid=fast")
	c.expect(t, "$iothub/twin/res/200/?$rid=slow")

	fault(Fault{Action: ActionDrop})
	c.Publish("$iothub/twin/GET/?$rid=dropped", 0, false, []byte{})
	c.waitLost(t, "a drop fault on a twin request")
}

func TestHubTelemetryFaults(t *testing.T) {
	env := newHubEnv(t, nil)
	key := env.addSASDevice(t, "tele-flaky", "hub1")
	stored := func() int {
		var n int
		env.e.State().WithDevice("tele-flaky", func(d *Device) { n = len(d.Telemetry) })
		return n
	}
	for _, action := range []string{ActionDrop, ActionThrottle, ActionError} {
		t.Run(action, func(t *testing.T) {
			env.addFault(t, Fault{Endpoint: EndpointHub, Device: "tele-flaky", Operation: OpTelemetry, Action: action})
			c := env.connectSAS(t, "tele-flaky", key, hubAPIGA)
			before := stored()
			c.Publish("devices/tele-flaky/messages/events/", 1, false, []byte("lost"))
			c.waitLost(t, action+" on telemetry")
			if stored() != before {
				t.Error("the message was stored")
			}
		})
	}
	t.Run("delay holds the PUBACK, then stores", func(t *testing.T) {
		env.addFault(t, Fault{Endpoint: EndpointHub, Device: "tele-flaky", Operation: OpTelemetry, Action: ActionDelay, Delay: Duration(200 * time.Millisecond)})
		c := env.connectSAS(t, "tele-flaky", key, hubAPIGA)
		before := stored()
		start := time.Now()
		c.publish(t, "devices/tele-flaky/messages/events/", 1, []byte("late"))
		if time.Since(start) < 200*time.Millisecond {
			t.Error("PUBACK came before the injected delay")
		}
		if stored() != before+1 {
			t.Error("the delayed message was not stored")
		}
	})
}

func TestHubCredentialAPIFaults(t *testing.T) {
	env := newHubEnv(t, nil)
	dev := env.addIssuedDevice(t, "renew-flaky")
	c := env.connectX509(t, dev, hubAPIPreview, true)
	c.mustSubscribe(t, hubFilterCredentials, hubFilterTwinResponses)
	key := hubNewKey(t)
	csr := hubNewCSR(t, key, dev.id)
	fault := func(f Fault) {
		f.Endpoint, f.Device, f.Operation = EndpointCredentialAPI, dev.id, OpIssue
		env.addFault(t, f)
	}
	request := func(rid string) { c.requestCertificate(t, rid, credentialBody(t, dev.id, csr, "")) }

	fault(Fault{Action: ActionThrottle, RetryAfter: 7})
	request("throttled-1")
	if b := c.expectError(t, "throttled-1", 429002); b.RetryAfter == nil || *b.RetryAfter != 7 {
		t.Errorf("throttled: retryAfter %v, want 7", b.RetryAfter)
	}
	fault(Fault{Action: ActionError, Status: 503})
	request("unavailable-1")
	c.expectError(t, "unavailable-1", 503001)

	issued := func(rid string) (*x509Leaf, []byte) {
		t.Helper()
		c.expectAccepted(t, rid)
		m := c.expect(t, "$iothub/credentials/res/200/?$rid="+rid)
		var body struct {
			Certificates []string `json:"certificates"`
		}
		if err := json.Unmarshal(m.Payload(), &body); err != nil || len(body.Certificates) == 0 {
			return nil, m.Payload()
		}
		_, chain := issuedChain(t, m, "object")
		return &x509Leaf{chain[0].Subject.CommonName, chain[0].NotAfter, chain[0].PublicKey.(*ecdsa.PublicKey).Equal(key.Public())}, m.Payload()
	}

	fault(Fault{Action: ActionWrongKey})
	request("wrong-key-1")
	if leaf, _ := issued("wrong-key-1"); leaf == nil || leaf.ourKey || leaf.cn != dev.id {
		t.Errorf("wrong_key issued %+v, want our CN and another key", leaf)
	}
	fault(Fault{Action: ActionExpired})
	request("expired-1")
	if leaf, _ := issued("expired-1"); leaf == nil || !leaf.notAfter.Before(time.Now()) || !leaf.ourKey {
		t.Errorf("expired issued %+v, want an expired certificate for our key", leaf)
	}
	fault(Fault{Action: ActionWrongCN})
	request("wrong-cn-1")
	if leaf, _ := issued("wrong-cn-1"); leaf == nil || leaf.cn == dev.id || !leaf.ourKey {
		t.Errorf("wrong_cn issued %+v, want another CN for our key", leaf)
	}
	fault(Fault{Action: ActionMalformedJSON})
	request("malformed-1")
	if _, body := issued("malformed-1"); json.Valid(body) {
		t.Errorf("malformed_json sent valid JSON: %s", body)
	}
	fault(Fault{Action: ActionHostile})
	request("hostile-1")
	if _, body := issued("hostile-1"); len(body) < hubHostilePadding {
		t.Errorf("hostile sent %d bytes", len(body))
	}

	// A delayed request does not hold up the device's other requests.
	fault(Fault{Action: ActionDelay, Delay: Duration(300 * time.Millisecond)})
	request("delayed-1")
	c.publish(t, "$iothub/twin/GET/?$rid=meanwhile", 0, nil)
	c.expect(t, "$iothub/twin/res/200/?$rid=meanwhile")
	c.expectAccepted(t, "delayed-1")
	c.expect(t, "$iothub/credentials/res/200/?$rid=delayed-1")

	fault(Fault{Action: ActionDrop})
	c.Publish("$iothub/credentials/POST/issueCertificate/?$rid=dropped-1", 1, false, credentialBody(t, dev.id, csr, ""))
	c.waitLost(t, "a drop fault on issueCertificate")
}

// x509Leaf is what the fault tests check of an issued leaf.
type x509Leaf struct {
	cn       string
	notAfter time.Time
	ourKey   bool
}
