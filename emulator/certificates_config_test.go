package emulator

import (
	"crypto/rand"
	"crypto/rsa"
	"strings"
	"testing"
	"time"
)

// The certificates section of the configuration governs what DPS and the
// credential API issue: the lifetime of every leaf, and the CSR key types
// taken (here RSA only, the opposite of the default).
func TestCertificatePolicyFromConfig(t *testing.T) {
	const regID = "policy-device"
	key := dpsKey("policy")
	_, ep := startDPSEmulator(t, func(c *Config) {
		c.Certificates.Lifetime = Duration(90 * time.Second)
		c.Certificates.KeyTypes = []string{"rsa-2048"}
		c.Enrollments = []Enrollment{dpsSymmetricEnrollment(regID, key)}
	})
	cl := dpsDial{regID: regID, password: dpsSAS(t, ep.IDScope, regID, key)}.mustConnect(t, ep)

	_, ecCSR := dpsCSR(t, regID)
	r := cl.await(cl.register(registerBody(regID, ecCSR, "")))
	if eb := r.errorBody(t); r.status != 400 || eb.ErrorCode != dpsCodeInvalidField || !strings.Contains(eb.Message, "key type") {
		t.Errorf("an EC CSR where only rsa-2048 is allowed: %d %s, want 400 naming the key type", r.status, r.body)
	}

	rsaKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	_, st := cl.provision(registerBody(regID, dpsCSRFor(t, rsaKey, regID), ""))
	chain := dpsChain(t, st.RegistrationState)
	verifyIssuedChain(t, ep, chain, rsaKey, regID)
	if got := chain[0].NotAfter.Sub(chain[0].NotBefore); got != 90*time.Second {
		t.Errorf("DPS issued a leaf valid for %s, want certificates.lifetime 90s", got)
	}
}

func TestCredentialAPILifetimeFromConfig(t *testing.T) {
	env := newHubEnv(t, func(c *Config) { c.Certificates.Lifetime = Duration(2 * time.Hour) })
	dev := env.addIssuedDevice(t, "policy-renewer")
	c := env.connectX509(t, dev, hubAPIPreview, true)
	c.mustSubscribe(t, hubFilterCredentials)
	c.requestCertificate(t, "lifetime-1", credentialBody(t, dev.id, hubNewCSR(t, hubNewKey(t), dev.id), ""))
	c.expectAccepted(t, "lifetime-1")
	_, chain := issuedChain(t, c.expect(t, "$iothub/credentials/res/200/?$rid=lifetime-1"), "object")
	if got := chain[0].NotAfter.Sub(chain[0].NotBefore); got != 2*time.Hour {
		t.Errorf("the credential API issued a leaf valid for %s, want certificates.lifetime 2h", got)
	}
}
