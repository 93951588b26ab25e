// `express4` is Express 4 under another name (package.json), for the tests that need its
// router. Its API is typed as Express 5's, which it matches for what the tests use.
declare module 'express4' {
  import express from 'express';
  export default express;
}
