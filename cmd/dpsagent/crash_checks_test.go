package main

import (
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/dpsagent/dpsagent/tpm"
)

// What a crash must never cost, checked after every kill and every restart.

// crashStoredKey is a key blob a manifest named after a kill, with the
// certificate it must sign for; it is tried in the TPM once the restarted
// agent has had its go (see checkKeysSign).
type crashStoredKey struct {
	what string // "current identity, serial ..."
	blob []byte
	leaf *x509.Certificate
}

// checkAfterKill reads the state directory as the kill left it: the manifest
// is either absent or whole, and every identity it names is complete: files
// present and non-empty, the chain verifying to the emulator's device root
// for this device. It returns the manifest and the identities' keys.
func (r *crashRig) checkAfterKill() (stateManifest, []crashStoredKey, error) {
	data, err := os.ReadFile(filepath.Join(r.dev.stateDir, "state.json"))
	var m stateManifest
	switch {
	case errors.Is(err, os.ErrNotExist):
		return m, nil, r.checkNothingSetAside()
	case err != nil:
		return m, nil, err
	}
	if err := json.Unmarshal(data, &m); err != nil {
		return m, nil, fmt.Errorf("the manifest the kill left is not whole: %w\n%s", err, data)
	}
	var stored []crashStoredKey
	for _, which := range []struct {
		name string
		id   *stateIdentity
	}{{"current", m.Current}, {"next", m.Next}} {
		if which.id == nil {
			continue
		}
		k, err := r.checkIdentity(which.id)
		if err != nil {
			return m, nil, fmt.Errorf("after the kill, the manifest's %s identity (serial %s) is not whole: %w", which.name, which.id.Serial, err)
		}
		k.what = fmt.Sprintf("the %s identity (serial %s) the kill left", which.name, which.id.Serial)
		stored = append(stored, k)
	}
	return m, stored, r.checkNothingSetAside()
}

// checkIdentity checks the files of one identity named by the manifest.
func (r *crashRig) checkIdentity(id *stateIdentity) (crashStoredKey, error) {
	for _, name := range []string{id.KeyFile, id.ChainFile} {
		fi, err := os.Stat(filepath.Join(r.dev.stateDir, name))
		if err != nil {
			return crashStoredKey{}, fmt.Errorf("the manifest names %q: %w", name, err)
		}
		if !fi.Mode().IsRegular() || fi.Size() == 0 {
			return crashStoredKey{}, fmt.Errorf("the manifest names %q, which is empty or not a regular file", name)
		}
	}
	chain, err := r.dev.storedChain(id)
	if err != nil {
		return crashStoredKey{}, err
	}
	leaf := chain[0]
	inter := x509.NewCertPool()
	for _, c := range chain[1:] {
		inter.AddCert(c)
	}
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: r.lab.roots, Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		return crashStoredKey{}, fmt.Errorf("the stored chain does not verify: %w", err)
	}
	if leaf.Subject.CommonName != r.regID || !strings.EqualFold(leaf.SerialNumber.Text(16), id.Serial) {
		return crashStoredKey{}, fmt.Errorf("the stored certificate is %s serial %x, the manifest says %s serial %s", leaf.Subject.CommonName, leaf.SerialNumber, r.regID, id.Serial)
	}
	blob, err := os.ReadFile(filepath.Join(r.dev.stateDir, id.KeyFile))
	if err != nil {
		return crashStoredKey{}, err
	}
	return crashStoredKey{blob: blob, leaf: leaf}, nil
}

// checkKeysSign loads each key into the TPM and checks a signature made with
// it against its certificate. It runs with no agent using the TPM (swtpm
// serves one connection at a time), after the restarted agent has stopped;
// objects a killed agent left loaded in the TPM are flushed first, as a
// power cut would have: that the agent copes with them is the restart's test.
func (r *crashRig) checkKeysSign(stored []crashStoredKey) error {
	if len(stored) == 0 {
		return nil
	}
	if err := crashFlushTransients(r.tpm); err != nil {
		return err
	}
	t, err := tpm.Open(r.tpm, tpm.Options{})
	if err != nil {
		return fmt.Errorf("open the TPM: %w", err)
	}
	defer t.Close()
	for _, k := range stored {
		if err := r.checkKeySigns(t, k.blob, k.leaf); err != nil {
			return fmt.Errorf("%s: %w", k.what, err)
		}
	}
	return nil
}

func (r *crashRig) checkKeySigns(t *tpm.TPM, blob []byte, leaf *x509.Certificate) error {
	k, err := t.LoadKey(blob)
	if err != nil {
		return fmt.Errorf("the key blob does not load: %w", err)
	}
	h := k.Algorithm().Hash()
	digest := h.New()
	digest.Write([]byte("crash test: " + r.regID))
	sum := digest.Sum(nil)
	sig, err := k.Sign(rand.Reader, sum, h)
	if err != nil {
		return fmt.Errorf("the key does not sign in the TPM: %w", err)
	}
	pub, ok := leaf.PublicKey.(*ecdsa.PublicKey)
	if !ok {
		return fmt.Errorf("the certificate holds a %T key; the crash test expects ECDSA", leaf.PublicKey)
	}
	if !ecdsa.VerifyASN1(pub, sum, sig) {
		return errors.New("the TPM key is not the certificate's key: its signature does not verify")
	}
	return nil
}

// checkNothingSetAside fails if the store ever found a manifest unusable:
// a crash must never corrupt it.
func (r *crashRig) checkNothingSetAside() error {
	entries, err := os.ReadDir(r.dev.stateDir)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), "state.json.") || strings.HasPrefix(e.Name(), "quarantine-") {
			return fmt.Errorf("the state was set aside as unusable (%s): a crash must leave the old or the new state, whole", e.Name())
		}
	}
	return nil
}

// strayFiles lists the files in the state directory that are neither the
// store's own (state.json, lock) nor named by m: temporary files and blobs
// of an interrupted run, which the store must have removed on start. The
// daemon's local socket (dpsagent.sock, a socket, not a file) is no state.
func (r *crashRig) strayFiles(m stateManifest) ([]string, error) {
	entries, err := os.ReadDir(r.dev.stateDir)
	if err != nil {
		return nil, err
	}
	named := []string{"state.json", "lock"}
	for _, id := range []*stateIdentity{m.Current, m.Next} {
		if id != nil {
			named = append(named, id.KeyFile, id.ChainFile)
		}
	}
	var stray []string
	for _, e := range entries {
		if e.Type()&fs.ModeSocket == 0 && !slices.Contains(named, e.Name()) {
			stray = append(stray, e.Name())
		}
	}
	return stray, nil
}

// restartAndCheck runs the agent again, without a kill point, and waits until
// the device is connected to the hub by this process with the certificate
// the manifest names as current, and the state directory holds nothing the
// manifest does not name. If the kill left an identity (after, the manifest
// as the kill left it), it must be the one in use, or the staged next one: a
// restart never registers a device again that has a valid identity. The
// agent is then stopped (SIGTERM, exit 0), and the keys the kill left must
// load and sign in the TPM. It returns the serial in use.
func (r *crashRig) restartAndCheck(after stateManifest, stored []crashStoredKey) (string, error) {
	a, err := r.start()
	if err != nil {
		return "", err
	}
	serial, err := r.waitSettled(a, "the restarted agent to connect with the stored identity")
	if err != nil {
		a.kill()
		return "", fmt.Errorf("%w\nagent output:\n%s", err, a.tail())
	}
	if err := a.stop(); err != nil {
		return "", fmt.Errorf("%w\nagent output:\n%s", err, a.tail())
	}
	if after.Current != nil && !strings.EqualFold(after.Current.Serial, serial) && (after.Next == nil || !strings.EqualFold(after.Next.Serial, serial)) {
		return serial, fmt.Errorf("the kill left %s, but the restarted agent uses %s: it registered again instead of using a valid identity", jsonText(after), serial)
	}
	if err := r.checkNothingSetAside(); err != nil {
		return serial, err
	}
	return serial, r.checkKeysSign(stored)
}

// waitSettled waits until agent a is connected (since it started) with the
// manifest's current certificate and the directory holds only what the
// manifest names. It returns the serial.
//
// The certificate in use is the one the agent reports in the twin once
// connected: the emulator's device record shows the last certificate the
// device connected with or was issued, and a credential operation a killed
// agent started completes a second later, after the restart has connected.
func (r *crashRig) waitSettled(a *crashAgent, what string) (string, error) {
	var (
		serial   string
		strayFor time.Time // since when the only thing wrong is stray files
	)
	err := crashPoll(crashLimit, what, a, func() (string, bool, error) {
		d, known, err := r.lab.device(r.regID)
		if err != nil || !known {
			return fmt.Sprintf("device known to the emulator: %t (%v)", known, err), false, nil
		}
		if !d.Connected || d.ConnectedSince == nil || d.ConnectedSince.Before(a.started) {
			return "the emulator shows " + jsonText(d), false, nil
		}
		using, err := r.lab.reportedSerial(r.regID)
		if err != nil {
			return err.Error(), false, nil
		}
		m, err := r.dev.readState()
		if err != nil || m.Current == nil || !strings.EqualFold(m.Current.Serial, using) {
			return fmt.Sprintf("connected, reporting certificate %q; manifest %s (%v)", using, jsonText(m), err), false, nil
		}
		stray, err := r.strayFiles(m)
		if err != nil || len(stray) > 0 {
			seen := fmt.Sprintf("connected with %s; files the manifest does not name: %q (%v)", using, stray, err)
			if strayFor.IsZero() {
				strayFor = time.Now()
			} else if time.Since(strayFor) > crashStrayGrace {
				// Nothing removes them until the next start: no use waiting.
				return seen, false, errors.New(seen)
			}
			return seen, false, nil
		}
		serial = m.Current.Serial
		return "", true, nil
	})
	return serial, err
}

// crashStrayGrace is how long files the manifest does not name may stay
// once the agent is connected: a renewal writes its blobs before it stages
// them, but none is due during these checks, and the store removes leftovers
// only when it opens.
const crashStrayGrace = 5 * time.Second

// refreshIfAging renews the device's certificate (cleanly, SIGHUP) when less
// than half its lifetime is left, so a renewal run never starts with an
// identity about to expire (which would take the provisioning path instead).
func (r *crashRig) refreshIfAging() error {
	m, err := r.dev.readState()
	if err != nil || m.Current == nil {
		return fmt.Errorf("the device has no identity to renew (%v)", err)
	}
	until, err := time.Parse(time.RFC3339, m.Current.NotAfter)
	if err != nil {
		return err
	}
	if time.Until(until) > r.lab.lifetime/2 {
		return nil
	}
	_, err = r.renewCleanly()
	r.lab.tally.count("refreshes before a renewal run", 1)
	return err
}

// crashRenewal is what a clean renewal run saw.
type crashRenewal struct {
	oldSerial, newSerial string
	took                 time.Duration // from SIGHUP to the old files' removal
	sequence             []string      // kill points from the key creation on
}

// renewCleanly runs the agent, asks for a renewal (SIGHUP) once it is
// connected, and waits until the new identity is current, in use, and the
// old one's files are gone. The trace lists the renewal's kill points.
func (r *crashRig) renewCleanly() (crashRenewal, error) {
	var rn crashRenewal
	trace := r.file(fmt.Sprintf("renew-%d.trace", time.Now().UnixNano()))
	a, err := r.start("DPSAGENT_KILL_FROM=tpm:Create", "DPSAGENT_KILL_TRACE="+trace)
	if err != nil {
		return rn, err
	}
	fail := func(err error) (crashRenewal, error) {
		a.kill()
		return rn, fmt.Errorf("%w\nagent output:\n%s", err, a.tail())
	}
	if rn.oldSerial, err = r.waitSettled(a, "the agent to connect before the renewal"); err != nil {
		return fail(err)
	}
	asked := time.Now()
	if err := a.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		return fail(err)
	}
	err = crashPoll(crashLimit, "the renewal", a, func() (string, bool, error) {
		m, err := r.dev.readState()
		if err != nil || m.Current == nil || strings.EqualFold(m.Current.Serial, rn.oldSerial) || m.Next != nil {
			return fmt.Sprintf("manifest %s (%v)", jsonText(m), err), false, nil
		}
		rn.newSerial = m.Current.Serial
		return "", true, nil
	})
	if err != nil {
		return fail(err)
	}
	if _, err := r.waitSettled(a, "the agent to settle on the renewed identity"); err != nil {
		return fail(err)
	}
	rn.took = time.Since(asked)
	if rn.sequence, err = crashReadSequence(trace); err != nil {
		return fail(err)
	}
	if err := a.stop(); err != nil {
		return rn, fmt.Errorf("%w\nagent output:\n%s", err, a.tail())
	}
	return rn, nil
}
