package dps

import (
	"bytes"
	"context"
	"testing"

	"github.com/dpsagent/dpsagent/emulator/mqttsrv"
)

// X.509 onboarding presents the birth certificate and its intermediates in
// the handshake, and sends no password.
func TestRegisterX509PresentsChain(t *testing.T) {
	f := startFakeDPS(t, func(f *fakeDPS, c *mqttsrv.Conn, req request) {
		f.reply(c, "$dps/registrations/res/200/?$rid="+ridOf(t, req.topic), assignedBody())
	})
	root := newTestCA(t, "birth root")
	key := softKey(t)
	leaf := root.sign(t, key.Public(), testRegID, false)
	intermediate := []byte(root.cert.Raw)
	c := newTestClient(t, f, func(o *Options) { o.Auth = X509(key, [][]byte{leaf, intermediate}) })
	if _, err := c.Register(context.Background(), nil, nil); err != nil {
		t.Fatal(err)
	}
	connects, _, _ := f.recorded()
	cr := connects[0]
	peers := cr.PeerCertificates()
	if len(peers) != 2 || !bytes.Equal(peers[0].Raw, leaf) || !bytes.Equal(peers[1].Raw, intermediate) {
		t.Errorf("server saw %d certificates, want the leaf and the intermediate", len(peers))
	}
	if len(cr.Password) != 0 {
		t.Errorf("password %q, want none", cr.Password)
	}
}
