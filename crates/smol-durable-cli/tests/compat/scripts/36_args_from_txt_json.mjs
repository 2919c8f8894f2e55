export const meta = { name: "args-from-txt-json", description: "--args-from-file with a .txt extension is read as JSON; two files and --args-* merge in order" };

export default { args, json: JSON.stringify(args) };
