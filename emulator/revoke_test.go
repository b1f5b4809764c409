package emulator

import (
	"strings"
	"testing"
)

// POST /api/devices/{id}/revoke ends the device's connection and makes the hub
// refuse every certificate issued to it so far; one issued afterwards (as DPS
// re-provisioning would issue it) connects.
func TestAdminRevokeEndToEnd(t *testing.T) {
	env := newHubEnv(t, nil)
	dev := env.addIssuedDevice(t, "revoked-dev")
	other := env.addIssuedDevice(t, "bystander")
	c := env.connectX509(t, dev, hubAPIGA, true)
	bystander := env.connectX509(t, other, hubAPIGA, true)

	status, body := call(t, env.ep, "POST", "/api/devices/revoked-dev/revoke", "")
	if status != 200 || !strings.Contains(body, `"revoked": true`) {
		t.Fatalf("revoke: %d %s", status, body)
	}
	c.waitLost(t, "its certificates were revoked")
	if _, code := env.connect(t, hubDial{clientID: dev.id, username: hubUser(hub1Host, dev.id, hubAPIGA), cert: dev.cert, clean: true}); code != 5 {
		t.Errorf("reconnecting with the revoked certificate: CONNACK %d, want 5", code)
	}
	if !bystander.IsConnectionOpen() {
		t.Error("revoking one device disconnected another")
	}
	fresh, _ := env.issueCert(t, dev.id)
	env.connectX509(t, credentialDevice{id: dev.id, cert: fresh}, hubAPIGA, true)
	if d := env.device(t, dev.id); !d.Connected {
		t.Errorf("after connecting with a new certificate: %+v", d)
	}
}
