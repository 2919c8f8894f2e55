export const meta = { name: "args-file-not-object", description: "--args-from-file holding a JSON array is refused" };

export default args;
