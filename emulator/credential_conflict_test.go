package emulator

import (
	"testing"
	"time"
)

// certificates.credential_api_conflict_code selects the errorCode of the 409
// a second issueCertificate gets while one is active; the sources disagree
// (reference §2.3 error table), so either can be reproduced.
func TestCredentialAPIConflictCodeIsConfigurable(t *testing.T) {
	for _, code := range []int{0, 409004, 409005} {
		want := code
		if want == 0 {
			want = 409005 // the default: the newest SDK sources
		}
		env := newHubEnv(t, func(c *Config) {
			c.Certificates.CredentialAPIDelay = Duration(time.Hour) // keeps the first pending
			c.Certificates.CredentialAPIConflictCode = code
		})
		dev := env.addIssuedDevice(t, "conflict-code")
		c := env.connectX509(t, dev, hubAPIPreview, true)
		c.mustSubscribe(t, hubFilterCredentials)
		csr := hubNewCSR(t, hubNewKey(t), dev.id)
		c.requestCertificate(t, "first-request", credentialBody(t, dev.id, csr, ""))
		c.expectAccepted(t, "first-request")
		c.requestCertificate(t, "second-request", credentialBody(t, dev.id, csr, ""))
		c.expectError(t, "second-request", want)
		env.close()
	}
}
