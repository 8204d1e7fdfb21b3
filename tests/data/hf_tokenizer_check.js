// The same check as hf_tokenizer_check.py with Hugging Face's own `tokenizers`
// library (its Rust crate through the npm package @anush008/tokenizers, found
// on NODE_PATH): encode a text with tokenizer.json, decode the ids again.
//
//     NODE_PATH=.../node_modules node hf_tokenizer_check.js tokenizer.json text.txt
//
// Prints one JSON line: {"ids", "roundtrip"}.
const fs = require("fs");
const { Tokenizer } = require("@anush008/tokenizers");

(async () => {
  const tok = Tokenizer.fromFile(process.argv[2]);
  const text = fs.readFileSync(process.argv[3], "utf8");
  const enc = await tok.encode(text, null, { addSpecialTokens: false });
  const ids = Array.from(enc.getIds());
  const back = await tok.decode(ids, false);
  console.log(JSON.stringify({ ids, roundtrip: back === text }));
})().catch((e) => {
  console.error(String(e));
  process.exit(1);
});
