package emulator

import (
	"crypto/ecdsa"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"os"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"
)

var hubGUIDPattern = regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$`)

// credentialDevice is an X.509 device on hub1 with a certificate from the
// emulator's PKI, as DPS leaves it.
type credentialDevice struct {
	id   string
	cert *tls.Certificate
}

func (env *hubEnv) addIssuedDevice(t *testing.T, id string) credentialDevice {
	t.Helper()
	env.e.State().AssignDevice(Device{DeviceID: id, RegistrationID: id, Hub: "hub1", Issued: true}, true)
	cert, _ := env.issueCert(t, id)
	return credentialDevice{id: id, cert: cert}
}

// connectX509 connects the device with its certificate and the given API
// version and CleanSession.
func (env *hubEnv) connectX509(t *testing.T, d credentialDevice, apiVersion string, clean bool) *hubClient {
	t.Helper()
	return env.mustConnect(t, hubDial{clientID: d.id, username: hubUser(hub1Host, d.id, apiVersion), cert: d.cert, clean: clean})
}

// credentialBody is an issueCertificate request body; replace "" leaves the
// field out.
func credentialBody(t *testing.T, id string, csr []byte, replace string) []byte {
	t.Helper()
	body := map[string]string{"id": id, "csr": base64.StdEncoding.EncodeToString(csr)}
	if replace != "" {
		body["replace"] = replace
	}
	return []byte(hubJSON(t, body))
}

func (c *hubClient) requestCertificate(t *testing.T, rid string, body []byte) {
	t.Helper()
	c.publish(t, "$iothub/credentials/POST/issueCertificate/?$rid="+rid, 1, body)
}

// expectAccepted waits for the 202 of rid and checks its body.
func (c *hubClient) expectAccepted(t *testing.T, rid string) (correlationID string) {
	t.Helper()
	m := c.expect(t, "$iothub/credentials/res/202/?$rid="+rid)
	var b struct {
		CorrelationID    string `json:"correlationId"`
		OperationExpires string `json:"operationExpires"`
	}
	if err := json.Unmarshal(m.Payload(), &b); err != nil {
		t.Fatalf("202 body %s: %v", m.Payload(), err)
	}
	expires, err := time.Parse(time.RFC3339, b.OperationExpires)
	if err != nil || !hubGUIDPattern.MatchString(b.CorrelationID) {
		t.Fatalf("202 body %s: correlationId must be a GUID, operationExpires RFC 3339 (%v)", m.Payload(), err)
	}
	if d := time.Until(expires); d < 50*time.Minute || d > 70*time.Minute {
		t.Errorf("operationExpires %s is %s away, want about an hour", b.OperationExpires, d)
	}
	return b.CorrelationID
}

// expectError waits for an error answer for rid and returns its body.
func (c *hubClient) expectError(t *testing.T, rid string, code int) hubErrorBody {
	t.Helper()
	m := c.next(t)
	wantTopic := "$iothub/credentials/res/" + strconv.Itoa(code/1000) + "/?$rid=" + rid
	if m.Topic() != wantTopic {
		t.Fatalf("received %s %s, want %s with errorCode %d", m.Topic(), m.Payload(), wantTopic, code)
	}
	b := hubErrorOf(t, m)
	if b.ErrorCode != code {
		t.Fatalf("errorCode %d (%s), want %d", b.ErrorCode, b.Message, code)
	}
	return b
}

// issuedChain decodes the 200 body in either form the emulator can send.
func issuedChain(t *testing.T, m mqtt.Message, form string) (correlationID string, chain []*x509.Certificate) {
	t.Helper()
	var b64 []string
	switch form {
	case "object":
		var body struct {
			CorrelationID string   `json:"correlationId"`
			Certificates  []string `json:"certificates"`
		}
		dec := json.NewDecoder(strings.NewReader(string(m.Payload())))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&body); err != nil {
			t.Fatalf("200 body %s: %v", m.Payload(), err)
		}
		correlationID, b64 = body.CorrelationID, body.Certificates
	case "array":
		if err := json.Unmarshal(m.Payload(), &b64); err != nil {
			t.Fatalf("200 body %s is not a bare array: %v", m.Payload(), err)
		}
	}
	for _, s := range b64 {
		der, err := base64.StdEncoding.DecodeString(s)
		if err != nil {
			t.Fatal(err)
		}
		c, err := x509.ParseCertificate(der)
		if err != nil {
			t.Fatal(err)
		}
		chain = append(chain, c)
	}
	return correlationID, chain
}

func TestHubCredentialAPI(t *testing.T) {
	for _, form := range []string{"object", "array"} {
		t.Run(form+" body", func(t *testing.T) {
			env := newHubEnv(t, func(c *Config) { c.Certificates.CredentialAPIBody = form })
			dev := env.addIssuedDevice(t, "renew-1")
			c := env.connectX509(t, dev, hubAPIPreview, true)
			c.mustSubscribe(t, hubFilterCredentials)

			key := hubNewKey(t)
			rid := hubGUID()
			c.requestCertificate(t, rid, credentialBody(t, dev.id, hubNewCSR(t, key, dev.id), ""))
			correlationID := c.expectAccepted(t, rid)
			m := c.expect(t, "$iothub/credentials/res/200/?$rid="+rid)
			if m.Qos() != 0 {
				t.Errorf("200 at QoS %d, want 0", m.Qos())
			}
			gotID, chain := issuedChain(t, m, form)
			if form == "object" && gotID != correlationID {
				t.Errorf("200 correlationId %q, 202 said %q", gotID, correlationID)
			}
			if len(chain) != 3 {
				t.Fatalf("chain of %d certificates, want leaf, issuing CA, root", len(chain))
			}
			leaf := chain[0]
			if !leaf.PublicKey.(*ecdsa.PublicKey).Equal(key.Public()) || leaf.Subject.CommonName != dev.id {
				t.Errorf("leaf for CN %q, key matches: %t", leaf.Subject.CommonName, leaf.PublicKey.(*ecdsa.PublicKey).Equal(key.Public()))
			}
			rootPEM, err := os.ReadFile(env.ep.DeviceRootFile)
			if err != nil {
				t.Fatal(err)
			}
			roots, inter := x509.NewCertPool(), x509.NewCertPool()
			roots.AppendCertsFromPEM(rootPEM)
			inter.AddCert(chain[1])
			if _, err := leaf.Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
				t.Errorf("issued chain does not verify to the device root: %v", err)
			}
			if d := env.device(t, dev.id); d.Certificate == nil || d.Certificate.Serial != NewCertificateInfo(leaf).Serial {
				t.Errorf("State records certificate %+v, want serial %s", d.Certificate, NewCertificateInfo(leaf).Serial)
			}

			// As the SDKs do: disconnect, reconnect with the new certificate.
			c.Disconnect(250)
			renewed := credentialDevice{id: dev.id, cert: &tls.Certificate{Certificate: [][]byte{chain[0].Raw, chain[1].Raw}, PrivateKey: key}}
			env.connectX509(t, renewed, hubAPIPreview, true)
			if d := env.device(t, dev.id); d.Certificate.SHA256 != Thumbprint(leaf) {
				t.Errorf("connected with %s, want the renewed certificate", d.Certificate.SHA256)
			}
		})
	}
}

func TestHubCredentialAPIRequestErrors(t *testing.T) {
	env := newHubEnv(t, nil)
	dev := env.addIssuedDevice(t, "renew-err")
	c := env.connectX509(t, dev, hubAPIPreview, true)
	c.mustSubscribe(t, hubFilterCredentials)
	key := hubNewKey(t)
	csr := hubNewCSR(t, key, dev.id)
	b64 := base64.StdEncoding.EncodeToString(csr)
	badSig := append([]byte(nil), csr...)
	badSig[len(badSig)-3] ^= 0xff

	for _, tt := range []struct {
		name string
		rid  string
		body string
		code int
	}{
		{"unknown field", "", `{"id":"renew-err","csr":"` + b64 + `","extra":1}`, 400004},
		{"id of another device", "", `{"id":"someone-else","csr":"` + b64 + `"}`, 400004},
		{"no id", "", `{"csr":"` + b64 + `"}`, 400004},
		{"no csr", "", `{"id":"renew-err"}`, 400004},
		{"id of the wrong type", "", `{"id":7,"csr":"` + b64 + `"}`, 400004},
		{"csr not base64", "", `{"id":"renew-err","csr":"!!notbase64!!"}`, 400004},
		{"csr over 8 KB", "", `{"id":"renew-err","csr":"` + strings.Repeat("QUFB", 2049) + `"}`, 400004},
		{"replace neither * nor a request ID", "", `{"id":"renew-err","csr":"` + b64 + `","replace":"-bad-"}`, 400004},
		{"request ID too short", "abc", `{"id":"renew-err","csr":"` + b64 + `"}`, 400004},
		{"request ID starting with -", "-abcd", `{"id":"renew-err","csr":"` + b64 + `"}`, 400004},
		{"request ID with _", "ab_cd", `{"id":"renew-err","csr":"` + b64 + `"}`, 400004},
		{"malformed JSON", "", `{"id":"renew-err","csr":`, 400006},
		{"CSR for another CN", "", string(credentialBody(t, dev.id, hubNewCSR(t, key, "someone-else"), "")), 400040},
		{"CSR that is not DER", "", `{"id":"renew-err","csr":"` + base64.StdEncoding.EncodeToString([]byte("hello")) + `"}`, 400040},
		{"CSR with a bad signature", "", string(credentialBody(t, dev.id, badSig, "")), 400040},
	} {
		t.Run(tt.name, func(t *testing.T) {
			rid := tt.rid
			if rid == "" {
				rid = hubGUID()
			}
			c.requestCertificate(t, rid, []byte(tt.body))
			c.expectError(t, rid, tt.code)
		})
	}
	if d := env.device(t, dev.id); d.Certificate.SHA256 != Thumbprint(dev.cert.Leaf) {
		t.Error("a refused request changed the device's certificate")
	}
}

// One operation per device: a second request needs replace.
func TestHubCredentialAPIConcurrency(t *testing.T) {
	// The operations must still be pending while the test replaces them.
	env := newHubEnv(t, func(c *Config) { c.Certificates.CredentialAPIDelay = Duration(time.Second) })
	dev := env.addIssuedDevice(t, "renew-conc")
	c := env.connectX509(t, dev, hubAPIPreview, true)
	c.mustSubscribe(t, hubFilterCredentials)
	csr := hubNewCSR(t, hubNewKey(t), dev.id)

	first := "first-request"
	c.requestCertificate(t, first, credentialBody(t, dev.id, csr, ""))
	firstCorrelation := c.expectAccepted(t, first)

	c.requestCertificate(t, "second-request", credentialBody(t, dev.id, csr, ""))
	b := c.expectError(t, "second-request", 409005)
	if b.Info["requestId"] != first || b.Info["correlationId"] != firstCorrelation || b.Info["operationExpires"] == nil {
		t.Errorf("409 info %v, want the pending request's requestId, correlationId and operationExpires", b.Info)
	}

	env.hub1().mu.Lock()
	env.hub1().conflictCode = 409004 // the C# service test's number
	env.hub1().mu.Unlock()
	c.requestCertificate(t, "third-request", credentialBody(t, dev.id, csr, ""))
	c.expectError(t, "third-request", 409004)

	c.requestCertificate(t, "fourth-request", credentialBody(t, dev.id, csr, "no-such-request"))
	c.expectError(t, "fourth-request", 412001)

	c.requestCertificate(t, "fifth-request", credentialBody(t, dev.id, csr, first))
	c.expectAccepted(t, "fifth-request")
	c.requestCertificate(t, "sixth-request", credentialBody(t, dev.id, csr, "*"))
	c.expectAccepted(t, "sixth-request")
	// Only the last operation completes: the replaced ones send nothing.
	c.expect(t, "$iothub/credentials/res/200/?$rid=sixth-request")

	c.requestCertificate(t, "seventh-request", credentialBody(t, dev.id, csr, "sixth-request"))
	c.expectError(t, "seventh-request", 412001) // completed: nothing pending to replace
	c.requestCertificate(t, "eighth-request", credentialBody(t, dev.id, csr, "*"))
	c.expectAccepted(t, "eighth-request")
}

func TestHubCredentialAPIPrerequisites(t *testing.T) {
	env := newHubEnv(t, nil)

	t.Run("no answer before subscribing, none without $rid", func(t *testing.T) {
		dev := env.addIssuedDevice(t, "renew-pre")
		c := env.connectX509(t, dev, hubAPIPreview, true)
		csr := hubNewCSR(t, hubNewKey(t), dev.id)
		c.requestCertificate(t, "before-subscribing", credentialBody(t, dev.id, csr, ""))
		c.mustSubscribe(t, hubFilterCredentials)
		c.publish(t, "$iothub/credentials/POST/issueCertificate/", 1, credentialBody(t, dev.id, csr, ""))
		c.publish(t, "$iothub/credentials/POST/issueCertificate/?$rid=", 1, credentialBody(t, dev.id, csr, ""))
		// Neither started an operation (no 409) nor got an answer: the next
		// message is this request's 202.
		c.requestCertificate(t, "after-subscribing", credentialBody(t, dev.id, csr, ""))
		c.expectAccepted(t, "after-subscribing")
		c.expect(t, "$iothub/credentials/res/200/?$rid=after-subscribing")
	})

	t.Run("a SAS-connected device is refused", func(t *testing.T) {
		key := env.addSASDevice(t, "renew-sas", "hub1")
		c := env.connectSAS(t, "renew-sas", key, hubAPIPreview)
		c.mustSubscribe(t, hubFilterCredentials)
		c.requestCertificate(t, "sas-request", credentialBody(t, "renew-sas", hubNewCSR(t, hubNewKey(t), "renew-sas"), ""))
		c.expectError(t, "sas-request", 401002)
	})

	t.Run("an API version before 2025-08-01-preview is refused", func(t *testing.T) {
		dev := env.addIssuedDevice(t, "renew-old")
		c := env.connectX509(t, dev, hubAPIGA, true)
		c.mustSubscribe(t, hubFilterCredentials)
		c.requestCertificate(t, "old-api-request", credentialBody(t, dev.id, hubNewCSR(t, hubNewKey(t), dev.id), ""))
		c.expectError(t, "old-api-request", 400001)
	})
}

// The 200 goes to the device's connection of the moment, if subscribed then
// (reference §2.3 "Subscription semantics").
func TestHubCredentialAPIDelivery(t *testing.T) {
	// Long enough for the test to reconnect between the 202 and the 200.
	env := newHubEnv(t, func(c *Config) { c.Certificates.CredentialAPIDelay = Duration(time.Second) })
	dev := env.addIssuedDevice(t, "renew-deliver")
	csr := hubNewCSR(t, hubNewKey(t), dev.id)
	lost := func() int { return env.logs.FilterMessageSnippet("credential answer lost").Len() }
	waitLost := func(n int) {
		t.Helper()
		deadline := time.Now().Add(hubWait)
		for lost() < n {
			if time.Now().After(deadline) {
				t.Fatal("the hub never gave the answer up")
			}
			time.Sleep(10 * time.Millisecond)
		}
	}

	t.Run("unsubscribing after the 202 loses the 200", func(t *testing.T) {
		c := env.connectX509(t, dev, hubAPIPreview, true)
		c.mustSubscribe(t, hubFilterCredentials)
		c.requestCertificate(t, "unsub-1", credentialBody(t, dev.id, csr, ""))
		c.expectAccepted(t, "unsub-1")
		hubWaitToken(t, c.Unsubscribe(hubFilterCredentials), "unsubscribe")
		waitLost(1)
		c.mustSubscribe(t, hubFilterCredentials)
		c.requestCertificate(t, "unsub-2", credentialBody(t, dev.id, csr, "")) // no 409: the first is over
		c.expectAccepted(t, "unsub-2")
		c.expect(t, "$iothub/credentials/res/200/?$rid=unsub-2")
		c.Disconnect(250)
	})

	t.Run("a CleanSession 0 reconnection gets the 200", func(t *testing.T) {
		c := env.connectX509(t, dev, hubAPIPreview, false)
		c.mustSubscribe(t, hubFilterCredentials)
		c.requestCertificate(t, "persist-1", credentialBody(t, dev.id, csr, ""))
		c.expectAccepted(t, "persist-1")
		c.Disconnect(250)
		c = env.connectX509(t, dev, hubAPIPreview, false)
		if !c.present {
			t.Fatal("session not present")
		}
		c.expect(t, "$iothub/credentials/res/200/?$rid=persist-1")
		c.Disconnect(250)
	})

	t.Run("a clean reconnection that subscribes again gets the 200", func(t *testing.T) {
		c := env.connectX509(t, dev, hubAPIPreview, true)
		c.mustSubscribe(t, hubFilterCredentials)
		c.requestCertificate(t, "resub-1", credentialBody(t, dev.id, csr, ""))
		c.expectAccepted(t, "resub-1")
		c = env.connectX509(t, dev, hubAPIPreview, true) // replaces the first
		c.mustSubscribe(t, hubFilterCredentials)
		c.expect(t, "$iothub/credentials/res/200/?$rid=resub-1")
	})

	t.Run("a clean reconnection without subscribing loses the 200", func(t *testing.T) {
		before := lost()
		c := env.connectX509(t, dev, hubAPIPreview, true)
		c.mustSubscribe(t, hubFilterCredentials)
		c.requestCertificate(t, "clean-1", credentialBody(t, dev.id, csr, ""))
		c.expectAccepted(t, "clean-1")
		c = env.connectX509(t, dev, hubAPIPreview, true)
		waitLost(before + 1)
		c.mustSubscribe(t, hubFilterCredentials)
		c.requestCertificate(t, "clean-2", credentialBody(t, dev.id, csr, ""))
		c.expectAccepted(t, "clean-2") // the lost one never arrives first
	})
}
