/**
 * Packs: the unit of work. A pack is a folder with a `reach-pack.json`
 * manifest (manifest.ts), built into a deterministic DAG-CBOR bundle named by
 * its CIDv1 (bundle.ts), vouched for by publisher signatures checked against
 * the node's trusted-key registry (trust.ts), and admitted or refused by the
 * node policy (policy.ts). Formats: protocol/SPEC.md §9. The registry file
 * itself is the node's (node/trust-registry.ts); packs/ does no file writing.
 */
export {
  BUDGET_FIELDS, CAPABILITIES, ENGINE_VERSION, MANIFEST_FILE,
  engineSatisfies, isPackPath, parseManifest, parseManifestText,
  type Budget, type BudgetField, type Capability, type PackManifest
} from './manifest.ts'
export {
  BUNDLE_VERSION, MAX_BUNDLE_BYTES, MAX_FILE_BYTES, MAX_FILES, MAX_TOTAL_BYTES,
  buildBundle, cidOf, decodeBundle, encodeBundle, isPackCid, parsePackCid,
  type Bundle, type Pack
} from './bundle.ts'
export {
  SIGNATURE_KIND, manifestHash, parsePackSignature, parseTrustFile, signPack, verifyPackSignature,
  type PackSignature, type SignedSubject, type TrustFile, type TrustStatus, type TrustedKey
} from './trust.ts'
export {
  DEFAULT_GRANTED, DEFAULT_MAX_BUDGET, DEFAULT_POLICY, POLICY_VERSION,
  admitPack, checkBudget, checkCapabilities, defaultPolicy, loadPolicy, parsePolicy, policyVersion,
  type Admission, type AdmitInput, type NodePolicy
} from './policy.ts'
