package store

import "encoding/json"

// Format 0 was the first agent's manifest: no format_version key and a single
// "identity" object, because it could not rotate keys. Its keys were always in
// the TPM and always came from DPS, so it did not record either.
//
//	{"id_scope": "0ne...", "identity": {"key_file": "...", "chain_file": "...",
//	 "key_algorithm": "ecdsa-p256", "registration_id": "...", "device_id": "...",
//	 "assigned_hub": "...", "provisioned_at": "..."}}
type wireV0 struct {
	IDScope  *string           `json:"id_scope"`
	Identity *wireV0Identity   `json:"identity"`
	LastReg  *wireRegistration `json:"last_registration"`
}

type wireV0Identity struct {
	KeyFile        *string `json:"key_file"`
	ChainFile      *string `json:"chain_file"`
	KeyAlgorithm   *string `json:"key_algorithm"`
	RegistrationID *string `json:"registration_id"`
	DeviceID       *string `json:"device_id"`
	AssignedHub    *string `json:"assigned_hub"`
	ProvisionedAt  *string `json:"provisioned_at"`
}

// decodeV0 migrates a format 0 manifest by rewriting it as format 1 and
// decoding that, so format 1's rules apply to the result unchanged.
func decodeV0(data []byte) (*Manifest, error) {
	var old wireV0
	if err := json.Unmarshal(data, &old); err != nil {
		return nil, fieldError(err)
	}
	w := wireManifest{FormatVersion: 1, IDScope: old.IDScope, LastRegistration: old.LastReg}
	if id := old.Identity; id != nil {
		tpm, dps := string(StorageTPM), string(PathDPS)
		w.Current = &wireIdentity{
			KeyFile:        id.KeyFile,
			ChainFile:      id.ChainFile,
			KeyAlgorithm:   id.KeyAlgorithm,
			KeyStorage:     &tpm,
			RegistrationID: id.RegistrationID,
			DeviceID:       id.DeviceID,
			AssignedHub:    id.AssignedHub,
			ProvisionedAt:  id.ProvisionedAt,
			Path:           &dps,
		}
	}
	v1, err := json.Marshal(&w)
	if err != nil {
		return nil, err
	}
	return decodeV1(v1)
}
