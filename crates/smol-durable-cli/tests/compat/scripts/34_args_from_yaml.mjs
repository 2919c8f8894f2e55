export const meta = { name: "args-from-yaml", description: "--args-from-file .yaml" };

export default { args, keys: Object.keys(args), json: JSON.stringify(args), typeofFlag: typeof args.flag, typeofDate: typeof args.date };
