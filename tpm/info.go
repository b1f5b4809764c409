package tpm

import (
	"encoding/binary"
	"fmt"
	"slices"
	"strings"

	"github.com/google/go-tpm/tpm2"
	"github.com/google/go-tpm/tpm2/transport"

	"github.com/dpsagent/dpsagent/tpm/keys"
)

// Info describes a TPM for operators deciding whether their chip fits, as
// `dpsagent tpm info` shows it. Field names are the --json contract.
type Info struct {
	Spec            string           `json:"tpm"`
	Manufacturer    string           `json:"manufacturer"`
	VendorString    string           `json:"vendor_string"`
	FirmwareVersion string           `json:"firmware_version"`
	SpecRevision    string           `json:"spec_revision"`
	SpecYear        int              `json:"spec_year"`
	KeyAlgorithms   []keys.Algorithm `json:"key_algorithms"`
	ECCCurves       []string         `json:"ecc_curves"`
	AutoAlgorithm   keys.Algorithm   `json:"auto_algorithm"`
	// TransientSlots is how many objects the TPM can hold loaded at once.
	TransientSlots int `json:"transient_slots"`
	// PersistentSRK says whether 0x81000002 holds the standard ECC storage root
	// key (then it is used; otherwise the primary is re-created from the template).
	PersistentSRK       bool `json:"persistent_srk"`
	PersistentSRKInUse  bool `json:"persistent_srk_usable"`
	PersistentHandleUse int  `json:"persistent_handles"`
}

// Info reads the TPM's identity and capabilities.
func (t *TPM) Info() (*Info, error) {
	if err := t.lock(); err != nil {
		return nil, err
	}
	defer t.mu.Unlock()
	props, err := t.properties(tpm2.TPMPTFamilyIndicator, 32)
	if err != nil {
		return nil, err
	}
	info := &Info{
		Spec:            t.spec,
		Manufacturer:    fourCC(props[tpm2.TPMPTManufacturer]),
		VendorString:    vendorString(props),
		FirmwareVersion: fmt.Sprintf("%d.%d.%d.%d", props[tpm2.TPMPTFirmwareVersion1]>>16, props[tpm2.TPMPTFirmwareVersion1]&0xffff, props[tpm2.TPMPTFirmwareVersion2]>>16, props[tpm2.TPMPTFirmwareVersion2]&0xffff),
		SpecRevision:    fmt.Sprintf("%d.%02d", props[tpm2.TPMPTRevision]/100, props[tpm2.TPMPTRevision]%100),
		SpecYear:        int(props[tpm2.TPMPTYear]),
		TransientSlots:  int(props[tpm2.TPMPTHRTransientMin]),
	}
	curves, err := t.eccCurves()
	if err != nil {
		return nil, err
	}
	for _, c := range curves {
		info.ECCCurves = append(info.ECCCurves, curveName(c))
	}
	algs, err := t.algorithms()
	if err != nil {
		return nil, err
	}
	if slices.Contains(algs, tpm2.TPMAlgECDSA) {
		if slices.Contains(curves, tpm2.TPMECCNistP256) {
			info.KeyAlgorithms = append(info.KeyAlgorithms, keys.ECDSAP256)
		}
		if slices.Contains(curves, tpm2.TPMECCNistP384) {
			info.KeyAlgorithms = append(info.KeyAlgorithms, keys.ECDSAP384)
		}
	}
	if slices.Contains(algs, tpm2.TPMAlgRSA) {
		info.KeyAlgorithms = append(info.KeyAlgorithms, keys.RSA2048)
	}
	info.AutoAlgorithm, err = t.autoAlgorithm()
	if err != nil {
		return nil, err
	}
	persistent, err := handles(t.tr, uint32(tpm2.TPMHTPersistent)<<24)
	if err != nil {
		return nil, err
	}
	info.PersistentHandleUse = len(persistent)
	if slices.Contains(persistent, PersistentSRKHandle) {
		info.PersistentSRK = true
		_, info.PersistentSRKInUse = t.persistentSRK()
	}
	return info, nil
}

// autoAlgorithm picks P-384 when the TPM lists the curve (Microsoft documents
// P-384 for issued certificates), else P-256. Callers hold t.mu.
func (t *TPM) autoAlgorithm() (keys.Algorithm, error) {
	curves, err := t.eccCurves()
	if err != nil {
		return "", err
	}
	if slices.Contains(curves, tpm2.TPMECCNistP384) {
		return keys.ECDSAP384, nil
	}
	return keys.ECDSAP256, nil
}

// eccCurves asks once and remembers: the answer cannot change while the TPM is open.
func (t *TPM) eccCurves() ([]tpm2.TPMECCCurve, error) {
	if t.curves != nil {
		return t.curves, nil
	}
	rsp, err := tpm2.GetCapability{Capability: tpm2.TPMCapECCCurves, PropertyCount: 32}.Execute(t.tr)
	if err != nil {
		return nil, fmt.Errorf("read the TPM's ECC curves: %w", err)
	}
	c, err := rsp.CapabilityData.Data.ECCCurves()
	if err != nil {
		return nil, fmt.Errorf("read the TPM's ECC curves: %w", err)
	}
	t.curves = append([]tpm2.TPMECCCurve{}, c.ECCCurves...)
	return t.curves, nil
}

func (t *TPM) algorithms() ([]tpm2.TPMAlgID, error) {
	rsp, err := tpm2.GetCapability{Capability: tpm2.TPMCapAlgs, PropertyCount: 128}.Execute(t.tr)
	if err != nil {
		return nil, fmt.Errorf("read the TPM's algorithms: %w", err)
	}
	a, err := rsp.CapabilityData.Data.Algorithms()
	if err != nil {
		return nil, fmt.Errorf("read the TPM's algorithms: %w", err)
	}
	out := make([]tpm2.TPMAlgID, 0, len(a.AlgProperties))
	for _, p := range a.AlgProperties {
		out = append(out, p.Alg)
	}
	return out, nil
}

func (t *TPM) properties(first tpm2.TPMPT, count uint32) (map[tpm2.TPMPT]uint32, error) {
	rsp, err := tpm2.GetCapability{Capability: tpm2.TPMCapTPMProperties, Property: uint32(first), PropertyCount: count}.Execute(t.tr)
	if err != nil {
		return nil, fmt.Errorf("read the TPM's properties: %w", err)
	}
	p, err := rsp.CapabilityData.Data.TPMProperties()
	if err != nil {
		return nil, fmt.Errorf("read the TPM's properties: %w", err)
	}
	out := make(map[tpm2.TPMPT]uint32, len(p.TPMProperty))
	for _, tp := range p.TPMProperty {
		out[tp.Property] = tp.Value
	}
	return out, nil
}

func handles(tr transport.TPM, first uint32) ([]tpm2.TPMHandle, error) {
	rsp, err := tpm2.GetCapability{Capability: tpm2.TPMCapHandles, Property: first, PropertyCount: 64}.Execute(tr)
	if err != nil {
		return nil, fmt.Errorf("list TPM handles: %w", err)
	}
	hs, err := rsp.CapabilityData.Data.Handles()
	if err != nil {
		return nil, fmt.Errorf("list TPM handles: %w", err)
	}
	return hs.Handle, nil
}

func fourCC(v uint32) string {
	var b [4]byte
	binary.BigEndian.PutUint32(b[:], v)
	return strings.TrimRight(strings.Map(printable, string(b[:])), " ")
}

func vendorString(props map[tpm2.TPMPT]uint32) string {
	var s strings.Builder
	for pt := tpm2.TPMPTVendorString1; pt <= tpm2.TPMPTVendorString1+3; pt++ {
		s.WriteString(fourCC(props[pt]))
	}
	return strings.TrimSpace(s.String())
}

func printable(r rune) rune {
	if r < 0x20 || r > 0x7e {
		return ' '
	}
	return r
}

func curveName(c tpm2.TPMECCCurve) string {
	switch c {
	case tpm2.TPMECCNistP192:
		return "nist-p192"
	case tpm2.TPMECCNistP224:
		return "nist-p224"
	case tpm2.TPMECCNistP256:
		return "nist-p256"
	case tpm2.TPMECCNistP384:
		return "nist-p384"
	case tpm2.TPMECCNistP521:
		return "nist-p521"
	case tpm2.TPMECCBNP256:
		return "bn-p256"
	case tpm2.TPMECCBNP638:
		return "bn-p638"
	case tpm2.TPMECCSM2P256:
		return "sm2-p256"
	}
	return fmt.Sprintf("0x%04x", uint16(c))
}
