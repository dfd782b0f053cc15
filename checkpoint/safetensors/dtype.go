package safetensors

// dtypeSize maps each dtype this package reads and writes to its element
// size in bytes. The names are the safetensors spellings.
var dtypeSize = map[string]int{
	"F64":  8,
	"I64":  8,
	"F32":  4,
	"I32":  4,
	"F16":  2,
	"BF16": 2,
	"I16":  2,
	"I8":   1,
	"U8":   1,
	"BOOL": 1,
}

// maxHeaderSize bounds the header length read from a file, as the reference
// implementation does (safetensors' MAX_HEADER_SIZE), so that a corrupt
// length cannot make Parse decode hundreds of megabytes of JSON.
const maxHeaderSize = 100_000_000

// metadataKey is the reserved header key holding the free-form string map.
const metadataKey = "__metadata__"
