// Text in and out with a GGUF's own vocabulary, through llama.cpp's tokenizer (node-llama-cpp, loading the file's
// vocabulary only): it reads every vocabulary kind a GGUF carries (SentencePiece, byte-level BPE with the
// pre-tokenizer the file names, WordPiece) exactly as llama.cpp does, which no JavaScript tokenizer library does from a
// GGUF. Optional: the demo runs on token ids without it.

export interface Vocabulary {
  encode(text: string): number[];
  decode(ids: readonly number[]): string;
}

export async function loadVocabulary(file: string): Promise<Vocabulary> {
  let lib: typeof import('node-llama-cpp');
  try {
    lib = await import('node-llama-cpp');
  } catch (e) {
    throw new Error(`--prompt needs node-llama-cpp for the file's tokenizer (npm i node-llama-cpp), or give --tokens: ${(e as Error).message.split('\n')[0]}`);
  }
  const llama = await lib.getLlama({ gpu: false, build: 'never', logLevel: lib.LlamaLogLevel.error });
  const model = await llama.loadModel({ modelPath: file, vocabOnly: true });
  return {
    // As llama.cpp's tools do: the begin token first where the vocabulary asks for it.
    encode: (text) => [...(model.tokens.shouldPrependBosToken && model.tokens.bos !== null ? [model.tokens.bos] : []), ...model.tokenize(text, false)].map(Number),
    decode: (ids) => model.detokenize(ids as never),
  };
}
