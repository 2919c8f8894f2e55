export const meta = { name: 'compat-child', description: 'child of compat-parent' };
phase('Child');
const c = await agent('child handles ' + args.item);
export default { c, item: args.item };
