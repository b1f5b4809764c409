package emulator

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"
	"go.uber.org/goleak"
	"go.uber.org/zap/zaptest"

	"github.com/dpsagent/dpsagent/mqtt/sas"
)

// lifecycleWait bounds each wait; it is a hang guard, not a timing assertion.
const lifecycleWait = 10 * time.Second

// Malformed packets, sent through TLS to the real front-ends: each closes its
// connection (at most after a refusing CONNACK) and leaves the server serving.
var lifecycleMalformed = []struct {
	name string
	send []byte
}{
	{"PUBLISH before CONNECT", []byte{0x30, 0x04, 0x00, 0x01, 'a', 'x'}},
	{"remaining length of 5 bytes", []byte{0x10, 0xff, 0xff, 0xff, 0xff, 0x7f}},
	{"CONNECT above the size limit", []byte{0x10, 0xff, 0xff, 0xff, 0x7f}},
	{"CONNECT for an unknown protocol", append([]byte{0x10, 0x0e, 0x00, 0x04}, "MQTX\x04\x02\x00\x00\x00\x02id"...)},
	{"CONNECT client ID not UTF-8", []byte{0x10, 0x0e, 0x00, 0x04, 'M', 'Q', 'T', 'T', 0x04, 0x02, 0x00, 0x00, 0x00, 0x02, 0xc3, 0x28}},
	{"not MQTT at all", []byte("GET / HTTP/1.1\r\nHost: iotemu\r\n\r\n")},
}

// expectClosed sends b on a new TLS connection to addr and waits for the
// server to close it.
func expectClosed(t *testing.T, addr string, roots *x509.CertPool, b []byte) error {
	t.Helper()
	c, err := tls.DialWithDialer(&net.Dialer{Timeout: lifecycleWait}, "tcp", addr, &tls.Config{RootCAs: roots, ServerName: "localhost", MinVersion: tls.VersionTLS12})
	if err != nil {
		return err
	}
	defer c.Close()
	if _, err := c.Write(b); err != nil {
		return err
	}
	_ = c.SetReadDeadline(time.Now().Add(lifecycleWait))
	_, err = io.Copy(io.Discard, c) // a refusing CONNACK may come first
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return fmt.Errorf("the connection is still open after %s", lifecycleWait)
	}
	return nil
}

// The emulator as a whole leaves no goroutine behind: after malformed
// packets on both front-ends, and closed while a device is connected to each,
// a registration is being assigned, a credential operation is pending and an
// admin API call waits for a direct method's answer. That call ends with the
// close instead of holding it up.
func TestEmulatorLeavesNoGoroutines(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	const regID, deviceID = "leak-reg", "leak-dev"
	regKey := sas.EncodeKey([]byte("lifecycle-test-registration-key!"))
	devKey := []byte("lifecycle-test-device-key-012345")
	cfg := Config{
		DPS:          ListenerConfig{Listen: "localhost:0"},
		Hubs:         []HubConfig{{Name: "hub1", Host: "localhost", Listen: "127.0.0.1:0"}},
		Admin:        ListenerConfig{Listen: "127.0.0.1:0"},
		Certificates: CertificatesConfig{CredentialAPIDelay: Duration(time.Hour)},
		Enrollments:  []Enrollment{{RegistrationID: regID, Attestation: Attestation{Type: AttestSymmetricKey, PrimaryKey: regKey}}},
	}
	e, err := New(cfg, t.TempDir(), Options{Logger: zaptest.NewLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	ep, err := e.Start()
	if err != nil {
		t.Fatal(err)
	}
	closed := false
	defer func() {
		if !closed {
			_ = e.Close()
		}
	}()
	pemBytes, err := os.ReadFile(ep.TLSCAFile)
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(pemBytes)

	for _, addr := range []string{ep.DPS, ep.Hubs["hub1"].Address} {
		for _, m := range lifecycleMalformed {
			if err := expectClosed(t, addr, roots, m.send); err != nil {
				t.Errorf("%s to %s: %v", m.name, addr, err)
			}
		}
	}

	connect := func(addr, clientID, user, password string) mqtt.Client {
		t.Helper()
		c := mqtt.NewClient(mqtt.NewClientOptions().AddBroker("ssl://" + addr).SetClientID(clientID).
			SetUsername(user).SetPassword(password).SetProtocolVersion(4).SetCleanSession(true).
			SetAutoReconnect(false).SetConnectRetry(false).SetConnectTimeout(lifecycleWait).
			SetTLSConfig(&tls.Config{RootCAs: roots, ServerName: "localhost", MinVersion: tls.VersionTLS12}))
		if tok := c.Connect(); !tok.WaitTimeout(lifecycleWait) || tok.Error() != nil {
			t.Fatalf("connect %s to %s: %v", clientID, addr, tok.Error())
		}
		return c
	}
	wait := func(tok mqtt.Token, what string) {
		t.Helper()
		if !tok.WaitTimeout(lifecycleWait) || tok.Error() != nil {
			t.Fatalf("%s: %v", what, tok.Error())
		}
	}

	// A registration being assigned (the default assignment takes a second).
	k, _ := sas.DecodeKey(regKey)
	dpsClient := connect(ep.DPS, regID, ep.IDScope+"/registrations/"+regID+"/api-version=2019-03-31",
		sas.Sign(sas.DPSResource(ep.IDScope, regID), k, sas.KeyNameRegistration, time.Now().Add(time.Hour)))
	defer dpsClient.Disconnect(0)
	answers := make(chan mqtt.Message, 4)
	wait(dpsClient.Subscribe(dpsResponseFilter, 1, func(_ mqtt.Client, m mqtt.Message) { answers <- m }), "subscribe to DPS answers")
	wait(dpsClient.Publish("$dps/registrations/PUT/iotdps-register/?$rid=1", 1, false, []byte(`{"registrationId":"`+regID+`"}`)), "register")
	select {
	case m := <-answers:
		if !strings.HasPrefix(m.Topic(), "$dps/registrations/res/202/") {
			t.Fatalf("register answered on %s", m.Topic())
		}
	case <-time.After(lifecycleWait):
		t.Fatal("no answer to the register request")
	}

	// A device waiting on its hub while the admin API invokes a method it
	// never answers.
	e.State().AssignDevice(Device{DeviceID: deviceID, RegistrationID: deviceID, Hub: "hub1", SymmetricKeys: [][]byte{devKey}}, true)
	hubClient := connect(ep.Hubs["hub1"].Address, deviceID, "localhost/"+deviceID+"/?api-version=2021-04-12",
		sas.Sign(sas.HubResource("localhost", deviceID), devKey, "", time.Now().Add(time.Hour)))
	defer hubClient.Disconnect(0)
	wait(hubClient.Subscribe(hubFilterMethods, 0, func(mqtt.Client, mqtt.Message) {}), "subscribe to methods")
	called := make(chan int, 1)
	go func() {
		client := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
		resp, err := client.Post(ep.Admin+"/api/devices/"+deviceID+"/methods/never", "application/json",
			strings.NewReader(`{"payload":{},"timeout_seconds":300}`))
		if err != nil {
			called <- 0
			return
		}
		resp.Body.Close()
		called <- resp.StatusCode
	}()
	deadline := time.Now().Add(lifecycleWait)
	for !e.hubs["hub1"].hasPendingMethod() {
		if time.Now().After(deadline) {
			t.Fatal("the method call never reached the hub")
		}
		time.Sleep(5 * time.Millisecond)
	}

	// The pending call must end because the device's connection does, not
	// hold the admin API's shutdown until its grace period runs out (which
	// Close reports as an error).
	if err := e.Close(); err != nil {
		t.Errorf("close: %v", err)
	}
	closed = true
	select {
	case status := <-called:
		if status != http.StatusNotFound {
			t.Errorf("the pending method call ended with %d, want 404 (device disconnected)", status)
		}
	case <-time.After(lifecycleWait):
		t.Fatal("the pending method call did not end with the emulator")
	}
	dpsClient.Disconnect(0)
	hubClient.Disconnect(0)
}

// hasPendingMethod reports whether a direct method call waits for an answer.
func (h *hub) hasPendingMethod() bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.methods) > 0
}
